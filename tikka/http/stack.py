"""The gateway's own middlewares, built from one ``Settings`` when an app is built.

BentoML instantiates a service's ASGI middlewares each time it builds the app: at each
worker's start under ``bentoml serve``, and at each ``Gateway.to_asgi()``. Built here
from ``get_settings()`` at that moment (never at import), a test runs any configuration
in-process: set the variables, clear the settings cache, build the app.

Outermost first, all inside BentoML's metrics and access log:

1. ``VersionedRoutes``: ``/v1/<route>`` is ``<route>``, so everything below sees the route it knows;
2. ``CORS``: here rather than BentoML's ``http.cors`` setting, which BentoML installs inside
   user middlewares: the errors below would lack CORS headers, and browsers hide them;
3. ``ErrorBoundary``: renders what the middlewares below raise, and framework error bodies;
4. ``APIKeyAuth``, then ``RateLimit``: before a byte of the body is read;
5. ``UploadGuard``: the body, read whole and checked;
6. ``ConcurrencyLimit``: inside the guard, so a request is admitted once its body has
   arrived whole, and slow clients hold a connection, never a slot.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from tikka.bentoml_patches import keep_uploads_in_memory
from tikka.http.auth import APIKeyAuth
from tikka.http.errors import CORS, ErrorBoundary
from tikka.http.overload import ConcurrencyLimit
from tikka.http.ratelimit import RateLimit
from tikka.http.routes import (
    API_PREFIX,
    ARCHIVE_ROUTES,
    JSON_ROUTES,
    KEYED_ROUTES,
    PROBES,
    UPLOAD_ROUTES,
    VERSIONED_PATHS,
    VersionedRoutes,
)
from tikka.http.upload_guard import UploadGuard
from tikka.settings import Settings, get_settings

UPLOAD_FIELD = "image"


def build(app: ASGIApp, settings: Settings) -> ASGIApp:
    keep_uploads_in_memory(max(settings.max_upload_bytes, settings.bulk_archive_bytes))
    # A task's submit request lasts as long as the task (BentoML runs it as the response's
    # background): bulk tasks queue for their own slots (TIKKA_BULK_TASKS) instead.
    app = ConcurrencyLimit(app, limit=settings.max_concurrency, exempt=(*PROBES, *ARCHIVE_ROUTES))
    app = UploadGuard(
        app,
        paths=UPLOAD_ROUTES,
        field=UPLOAD_FIELD,
        max_bytes=settings.max_upload_bytes,
        json_paths=JSON_ROUTES,
        archive_paths=ARCHIVE_ROUTES,
        max_archive_bytes=settings.bulk_archive_bytes,
        max_json_bytes=settings.max_json_bytes,
        idle_timeout_s=settings.body_idle_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_buffered_bytes=settings.max_buffered_body_bytes,
    )
    app = RateLimit(
        app,
        paths=KEYED_ROUTES,
        rate_per_s=settings.rate_limit_per_s,
        burst=settings.rate_limit_burst,
        by_key=bool(settings.api_keys),
    )
    app = APIKeyAuth(
        app,
        api_paths=KEYED_ROUTES,
        api_keys=settings.api_keys,
        metrics_paths=("/metrics", "/dashboard"),
        metrics_keys=settings.metrics_keys,
        failure_burst=settings.auth_failure_burst,
        failures_per_min=settings.auth_failures_per_min,
    )
    # A client still sending an oversized body gets its 413 (not a reset) up to 4x the limit.
    app = ErrorBoundary(app, max_drain_bytes=4 * settings.max_upload_bytes)
    app = CORS(
        app,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
        max_age=600,
    )
    return VersionedRoutes(app, prefix=API_PREFIX, paths=VERSIONED_PATHS)


class HTTPStack:
    """The middlewares above, as the one middleware BentoML is given."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = build(app, get_settings())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
