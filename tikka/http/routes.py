"""The route table of the public API, and the one way a request's path is read.

Every middleware that decides by route (the upload guard, the keys, the rate limit, load
shedding) reads ``route_of(scope)``, so a trailing slash cannot slip past one of them:
``/livez/`` is the probe ``/livez`` for all of them.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

API_PREFIX = "/v1"
UPLOAD_ROUTES = ("/predict", "/predict/explain")
LLM_ROUTES = ("/llm/generate", "/llm/dish")
# The public routes, each served as itself and under API_PREFIX (docs/routes.md).
VERSIONED_PATHS = tuple(sorted((*UPLOAD_ROUTES, *LLM_ROUTES, "/health", "/llm/health")))
# Infrastructure: never versioned, never shed or rate-limited.
PROBES = ("/livez", "/readyz", "/healthz", "/health", "/metrics")


def route_of(scope: Scope) -> str:
    """The request's path without a trailing slash (``/`` stays ``/``)."""
    return scope["path"].rstrip("/") or "/"


class VersionedRoutes:
    """``/v1/<route>`` is ``<route>``: the same handlers, checks and contract.

    By hand because it is one path rewrite, outermost among the service's middlewares
    (so the upload guard, the keys and the limits see the route they know); BentoML
    has no route aliases. The unversioned routes stay for existing clients.
    """

    def __init__(self, app: ASGIApp, prefix: str = API_PREFIX, paths: tuple[str, ...] = VERSIONED_PATHS):
        self.app, self.prefix, self.paths = app, prefix, frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix + "/"):
            route = scope["path"][len(self.prefix) :]
            if route in self.paths:
                scope = {**scope, "path": route, "raw_path": route.encode()}
        await self.app(scope, receive, send)
