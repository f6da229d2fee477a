"""The classifier's door: it answers the gateway and nobody else.

Served apart (docker/k8s), the classifier is an HTTP server of its own, and BentoML's
dependency calls to it are pickled (``application/vnd.bentoml+pickle``; BentoML refuses
that media type only on the entry service). Anyone who could reach its port could
run code in it, or use the model without a key. So, before a byte of the body is read:

- a caller on BentoML's private Unix socket passes: under ``bentoml serve`` the gateway
  reaches the classifier through a socket in a 0700 folder of its own, which no other
  user can open (uvicorn gives such a connection no client address);
- a caller over TCP passes only with ``Authorization: Bearer <TIKKA_INTERNAL_TOKEN>``,
  compared in constant time. With no token configured, no TCP caller passes.

Probes and metrics stay open: the orchestrator and Prometheus call them.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from tikka.errors import NotTheGateway
from tikka.http.errors import render
from tikka.settings import get_settings

OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})


def bearer(token: str) -> str:
    return f"Bearer {token}"


class GatewayOnly:
    def __init__(self, app: ASGIApp, token: str | None = None) -> None:
        self.app = app
        token = get_settings().internal_token if token is None else token
        self.expected = bearer(token).encode() if token else None

    def admits(self, scope: Scope) -> bool:
        if scope.get("client") is None:  # BentoML's private Unix socket
            return True
        if self.expected is None:
            return False
        presented = Headers(scope=scope).get("authorization", "").encode()
        return hmac.compare_digest(presented, self.expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self.admits(scope):
            await self.app(scope, receive, send)
            return
        refusal = NotTheGateway(
            "the classifier answers only the gateway: TIKKA_INTERNAL_TOKEN as Authorization: Bearer"
            + ("" if self.expected else " (none is configured here, so only the local socket is served)")
        )
        await render(refusal)(scope, receive, send)
