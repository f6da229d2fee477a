"""Load shedding at the gateway: beyond ``max_concurrency`` requests in flight, a 429 at once.

Written as a small ASGI middleware rather than BentoML's ``traffic.max_concurrency``
because BentoML answers its 429 outside every user middleware: the body was
``{"error": "Too many requests"}`` with no ``detail``, no ``Retry-After`` and no
CORS header, so a browser could not even read it. Here the answer has the
service's error shape and passes through CORS. Probes and metrics are never
shed: an orchestrator must see a busy service as alive and ready.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from tikka.errors import TooManyRequests
from tikka.http.routes import route_of

RETRY_AFTER_S = 1


class ConcurrencyLimit:
    def __init__(self, app: ASGIApp, limit: int, exempt: Iterable[str]):
        self.app = app
        self.limit = limit
        self.exempt = frozenset(exempt)
        self.in_flight = 0  # one event loop per worker process: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or route_of(scope) in self.exempt:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            detail = f"the service has {self.limit} requests in flight; retry in {RETRY_AFTER_S} s"
            raise TooManyRequests(detail, {"Retry-After": str(RETRY_AFTER_S)})
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
