"""The mounted FastAPI app: the GET routes besides BentoML's own, and the /v1 prefix."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse, JSONResponse

from tikka.bulk.runner import ProgressBoard
from tikka.errors import TaskNotFound
from tikka.http.errors import render
from tikka.http.schemas import HealthResponse
from tikka.llm.client import LLMHealth

SERVICE_NAME = "TikkaMasalAI"
ENTRY_SERVICE = "tikka"  # the Gateway's BentoML service name, as /metrics labels it
DASHBOARD_HTML = (Path(__file__).with_name("dashboard.html").read_text()).replace("__SERVICE_NAME__", ENTRY_SERVICE)


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


api_app = FastAPI(
    title=f"{SERVICE_NAME} GET routes",
    docs_url=None,  # /docs below shows the whole service's OpenAPI (BentoML's /docs.json)
    redoc_url=None,
    openapi_url=None,
)
api_app.state.model_tag = "not loaded"
api_app.state.git_sha = "unknown"


async def _no_classifier() -> None:
    return None


api_app.state.classifier_runtime = _no_classifier
api_app.state.bulk_progress = ProgressBoard()


@api_app.get("/", summary="Status banner")
async def banner(request: Request) -> dict[str, Any]:
    """`runtime`: what runs the model, and how it was chosen (null while the classifier cannot say)."""
    return {
        "service": SERVICE_NAME,
        "status": "ok",
        "model": request.app.state.model_tag,
        "runtime": await request.app.state.classifier_runtime(),
        "git_sha": request.app.state.git_sha,
        "predict": "POST /predict (multipart field 'image')",
        "docs": "/docs",
    }


@api_app.get("/docs", include_in_schema=False)
async def swagger_ui() -> HTMLResponse:
    """Swagger UI for the public API document (/openapi.json; tikka/http/openapi.py).

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


@api_app.get("/openapi.json", include_in_schema=False)
async def openapi_document(request: Request) -> JSONResponse:
    """The public API document: BentoML's, completed by tikka/http/openapi.py (set by the Gateway)."""
    return JSONResponse(request.app.state.openapi)


@api_app.get("/health", summary="Process liveness", response_model=HealthResponse)
async def health() -> HealthResponse:
    return HealthResponse(status="ok")


@api_app.get("/llm/health", summary="LLM sidecar status", response_model=LLMHealth)
async def llm_health(request: Request) -> LLMHealth:
    """Always 200 within ~2 s: the Bento is fine; the body says how the LLM is."""
    return await request.app.state.llm.health()


@api_app.get("/bulk_classify/progress", summary="Bulk task progress")
async def bulk_progress(request: Request, task_id: str = "") -> JSONResponse:
    """How far a bulk_classify task is (tikka/bulk/runner.py's Progress)."""
    progress = request.app.state.bulk_progress.get(task_id)
    if progress is None:
        return render(TaskNotFound(f"no bulk task {task_id[:64]!r} in this gateway's last 256 tasks"))
    return JSONResponse(progress.as_dict())


@api_app.get("/dashboard", summary="Metrics dashboard (HTML)", response_class=HTMLResponse)
async def dashboard() -> HTMLResponse:
    """A self-contained page that polls this service's own /metrics."""
    return HTMLResponse(DASHBOARD_HTML, headers=DASHBOARD_HEADERS)
