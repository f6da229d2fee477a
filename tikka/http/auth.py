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
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from tikka.errors import Unauthorized
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
        self, app: ASGIApp, api_paths: Iterable[str], api_keys: Iterable[str],
        metrics_paths: Iterable[str], metrics_keys: Iterable[str],
    ):
        self.app = app
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
                if path in paths and not key_matches(presented_key(Headers(scope=scope)), keys):
                    detail = "a valid API key is required: send it as 'Authorization: Bearer <key>' or 'X-API-Key'"
                    raise Unauthorized(detail, {"WWW-Authenticate": challenge})
        await self.app(scope, receive, send)
