"""Per-client rate limiting: a token bucket per client; past it, 429 with ``Retry-After``.

Off unless ``TIKKA_RATE_LIMIT_PER_S`` is set. Each client may send ``rate_limit_burst``
requests at once and ``rate_limit_per_s`` sustained. The client is the API key it
presented when keys are configured (the key middleware, outside this one, has checked
it), else its address. The address is the TCP peer, or what ``X-Forwarded-For`` says
when the peer is a trusted proxy: uvicorn (under BentoML) does that rewrite itself,
for the peers in ``FORWARDED_ALLOW_IPS``, before any of the service's code runs.

Buckets (tikka/http/buckets.py) are per worker process, and there is one gateway worker.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from tikka.errors import TooManyRequests
from tikka.http.auth import presented_key
from tikka.http.buckets import TokenBuckets
from tikka.http.routes import route_of


class RateLimit:
    def __init__(self, app: ASGIApp, paths: Iterable[str], rate_per_s: float, burst: int, by_key: bool):
        self.app = app
        self.paths = frozenset(paths)
        self.buckets = TokenBuckets(rate_per_s, burst) if rate_per_s > 0 else None
        self.by_key = by_key

    def client(self, scope: Scope) -> str:
        if self.by_key and (key := presented_key(Headers(scope=scope))):
            return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]  # never the key itself in memory dumps
        return "addr:" + (scope.get("client") or ("unknown",))[0]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.buckets is not None and scope["type"] == "http" and route_of(scope) in self.paths:
            if wait := self.buckets.take(self.client(scope)):
                retry_after = max(1, math.ceil(wait))
                raise TooManyRequests(
                    f"this client's rate limit is {self.buckets.rate:g} requests/s"
                    f" (bursts of {self.buckets.burst}); retry in {retry_after} s",
                    {"Retry-After": str(retry_after)},
                )
        await self.app(scope, receive, send)
