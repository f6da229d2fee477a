"""Optional access control: API keys for the prediction and LLM routes, and for the metrics.

Off unless keys are configured (the local quickstart needs none). Several keys
may be valid at once, so that a key can be rotated without downtime. Keys are
compared in constant time, every configured key each time, so that the time
to answer says nothing about how much of a key was right.

- Prediction and LLM routes: ``TIKKA_API_KEYS``, sent as ``Authorization:
  Bearer <key>`` or ``X-API-Key: <key>``.
- ``/metrics`` and ``/dashboard``: ``TIKKA_METRICS_KEYS``, as a bearer token
  (Prometheus's ``authorization.credentials``) or as the password of HTTP Basic
  auth, which a browser asks for and then re-sends on the dashboard's own
  fetches of ``/metrics``.

Probes (``/livez``, ``/readyz``, ``/health``) and CORS preflights are never
checked: an orchestrator and a browser must reach them without a key.

Wrong keys (not missing ones) are limited per address (``TIKKA_AUTH_FAILURE_BURST`` at once, then
``TIKKA_AUTH_FAILURES_PER_MIN``), whatever the rate limit says: past that a guesser gets
429 with ``Retry-After`` instead of an answer about the key. A right key always passes,
so clients behind the same address are not locked out by someone else's guesses.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from tikka.errors import TooManyRequests, Unauthorized
from tikka.http.buckets import TokenBuckets
from tikka.http.routes import route_of


def presented_key(headers: Headers) -> str | None:
    """The key from ``X-API-Key``, ``Authorization: Bearer`` or the password of ``Authorization: Basic``."""
    if key := headers.get("x-api-key"):
        return key
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode().partition(":")[2] or None
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


def key_matches(presented: str | None, keys: Iterable[str]) -> bool:
    if presented is None:
        return False
    matched = False
    for key in keys:  # no early exit: the time taken does not depend on which key matched
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    return matched


class APIKeyAuth:
    def __init__(
        self,
        app: ASGIApp,
        api_paths: Iterable[str],
        api_keys: Iterable[str],
        metrics_paths: Iterable[str],
        metrics_keys: Iterable[str],
        failure_burst: int = 10,
        failures_per_min: float = 30.0,
    ):
        self.app = app
        self.failures = TokenBuckets(failures_per_min / 60, failure_burst)
        self.rules = [
            (frozenset(paths), tuple(keys), challenge)
            for paths, keys, challenge in (
                (api_paths, api_keys, 'Bearer realm="tikka"'),
                (metrics_paths, metrics_keys, 'Basic realm="tikka metrics"'),
            )
            if keys
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] != "OPTIONS":
            path = route_of(scope)
            for paths, keys, challenge in self.rules:
                presented = presented_key(Headers(scope=scope))
                if path in paths and not key_matches(presented, keys):
                    if presented is not None:  # a guess; a missing key is a misconfigured client
                        self.count_failure(scope)
                    detail = "a valid API key is required: send it as 'Authorization: Bearer <key>' or 'X-API-Key'"
                    raise Unauthorized(detail, {"WWW-Authenticate": challenge})
        await self.app(scope, receive, send)

    def count_failure(self, scope: Scope) -> None:
        address = (scope.get("client") or ("unknown",))[0]
        if wait := self.failures.take("addr:" + address):
            retry_after = max(1, math.ceil(wait))
            raise TooManyRequests(
                f"too many wrong API keys from this address; retry in {retry_after} s",
                {"Retry-After": str(retry_after)},
            )
