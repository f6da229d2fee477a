"""The mounted FastAPI app (GET routes) and the JSON error shape every route shares."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from http import HTTPStatus
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tikka.schemas import ErrorResponse, HealthResponse, LLMHealthResponse

SERVICE_NAME = "TikkaMasalAI"
ENTRY_SERVICE = "tikka"  # the Gateway's BentoML service name, as /metrics labels it
DASHBOARD_HTML = (Path(__file__).with_name("dashboard.html").read_text()).replace(
    "__SERVICE_NAME__", ENTRY_SERVICE
)


def content_security_policy(html: str) -> str:
    """Only the page's own inline script (by hash) runs, and it may only fetch from this origin:
    markup that reaches the page through a metric label can never execute."""
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'" for script in scripts
    )
    return (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; connect-src 'self';"
        " base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


DASHBOARD_HEADERS = {
    "Content-Security-Policy": content_security_policy(DASHBOARD_HTML),
    "X-Content-Type-Options": "nosniff",
}


def error_response(
    status_code: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        ErrorResponse(error=error, detail=detail).model_dump(),
        status_code=status_code,
        headers=headers,
    )


def normalise_error_body(status: int, body: bytes) -> tuple[int, bytes]:
    """Any error answer -> (status, ``{"detail": str, "error": str}``).

    BentoML answers some errors in other shapes: plain text for unknown routes
    and wrong methods, a JSON array for 4xx (an open upstream bug), a generic
    message for 5xx, and request validation failures as 400 with a list of
    pydantic errors, which become 422 ``invalid_request`` naming each field.
    """
    try:
        payload = json.loads(body) if body else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = body.decode("utf-8", "replace").strip()
    if isinstance(payload, dict) and isinstance(payload.get("detail"), str):
        if isinstance(payload.get("error"), str):
            return status, body
        return status, json.dumps({**payload, "error": f"http_{status}"}).encode()
    if isinstance(payload, list) and len(payload) == 1 and isinstance(payload[0], dict):
        payload = payload[0]
    error = f"http_{status}"
    if isinstance(payload, dict) and isinstance(payload.get("detail"), list):
        status, error = 422, "invalid_request"
        detail = "; ".join(validation_message(item) for item in payload["detail"])
    elif isinstance(payload, dict):
        detail = str(payload.get("error") or "")
    else:
        detail = str(payload or "")
    detail = detail or HTTPStatus(status).phrase
    return status, json.dumps({"detail": detail, "error": error}).encode()


def validation_message(item) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
    return f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", item))


class JSONErrorBodies:
    """Rewrites every 4xx/5xx body that is not already our error shape (see above).

    Only error responses are buffered; successful ones stream through untouched.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error_start: Message | None = None
        chunks: list[bytes] = []

        async def send_json_errors(message: Message) -> None:
            nonlocal error_start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                error_start = message
                return
            if error_start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            status, body = normalise_error_body(error_start["status"], b"".join(chunks))
            headers = MutableHeaders(raw=list(error_start.get("headers", [])))
            headers["content-type"] = "application/json"
            headers["content-length"] = str(len(body))
            await send({**error_start, "status": status, "headers": headers.raw})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_json_errors)


api_app = FastAPI(
    title=f"{SERVICE_NAME} GET routes",
    docs_url=None,  # /docs below shows the whole service's OpenAPI (BentoML's /docs.json)
    redoc_url=None,
    openapi_url=None,
)
api_app.state.model_tag = "not loaded"


@api_app.exception_handler(HTTPException)
async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
    """The same code as BentoML's own routes (``http_<status>``), with the exception's
    headers: a 405 from these routes lacked ``Allow``."""
    return error_response(exc.status_code, f"http_{exc.status_code}", str(exc.detail), exc.headers)


@api_app.exception_handler(RequestValidationError)
async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(422, "invalid_request", "; ".join(map(validation_message, exc.errors())))


@api_app.get("/", summary="Status banner")
async def banner(request: Request) -> dict[str, str]:
    return {
        "service": SERVICE_NAME,
        "status": "ok",
        "model": request.app.state.model_tag,
        "predict": "POST /predict (multipart field 'image')",
        "docs": "/docs",
    }


@api_app.get("/docs", include_in_schema=False)
async def swagger_ui() -> HTMLResponse:
    """Swagger UI for the public API document (/openapi.json; tikka/openapi.py).

    BentoML's own page lives at `/`, where this app's banner answers, and loads a
    tag manager; this one uses the Swagger assets BentoML bundles: no CDN, no tracking.
    """
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{SERVICE_NAME} API",
        swagger_js_url="/static_content/swagger-ui-bundle.js",
        swagger_css_url="/static_content/swagger-ui.css",
        swagger_favicon_url="/static_content/favicon-light-32x32.png",
    )


class VersionedRoutes:
    """``/v1/<route>`` is ``<route>``: the same handlers, checks and contract.

    By hand because it is one path rewrite, outermost among the service's middlewares
    (so the upload guard, the keys and the limits see the route they know); BentoML
    has no route aliases. The unversioned routes stay for existing clients.
    """

    def __init__(self, app: ASGIApp, prefix: str, paths: tuple[str, ...]):
        self.app, self.prefix, self.paths = app, prefix, frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(self.prefix + "/"):
            route = path[len(self.prefix):]
            if route in self.paths:
                scope = {**scope, "path": route, "raw_path": route.encode()}
        await self.app(scope, receive, send)


@api_app.get("/openapi.json", include_in_schema=False)
async def openapi_document(request: Request) -> JSONResponse:
    """The public API document: BentoML's, completed by tikka/openapi.py (set by the Gateway)."""
    return JSONResponse(request.app.state.openapi)


@api_app.get("/health", summary="Process liveness", response_model=HealthResponse)
async def health() -> HealthResponse:
    return HealthResponse(status="ok")


@api_app.get("/llm/health", summary="LLM sidecar status", response_model=LLMHealthResponse)
async def llm_health() -> LLMHealthResponse:
    """Always 200 within ~2 s: the Bento is fine; the body says how the LLM is."""
    from dataclasses import asdict

    from tikka.llm import get_llm_client

    return LLMHealthResponse(**asdict(await get_llm_client().health()))


@api_app.get("/dashboard", summary="Metrics dashboard (HTML)", response_class=HTMLResponse)
async def dashboard() -> HTMLResponse:
    """A self-contained page that polls this service's own /metrics."""
    return HTMLResponse(DASHBOARD_HTML, headers=DASHBOARD_HEADERS)
