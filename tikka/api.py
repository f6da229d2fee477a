"""The mounted FastAPI app (GET routes) and the JSON error shape every route shares."""

from __future__ import annotations

import json
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tikka.schemas import ErrorResponse, HealthResponse

SERVICE_NAME = "TikkaMasalAI"


def error_response(
    status_code: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        ErrorResponse(error=error, detail=detail).model_dump(),
        status_code=status_code,
        headers=headers,
    )


def normalise_error_body(status: int, body: bytes) -> bytes:
    """Any error body -> ``{"detail": str, "error": str}``.

    BentoML answers some errors in other shapes: plain text for unknown routes
    and wrong methods, a JSON array for 4xx (an open upstream bug), a list of
    pydantic errors under ``detail``, a generic message for 5xx.
    """
    try:
        payload = json.loads(body) if body else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = body.decode("utf-8", "replace").strip()
    if isinstance(payload, dict) and isinstance(payload.get("detail"), str):
        if isinstance(payload.get("error"), str):
            return body
        return json.dumps({**payload, "error": f"http_{status}"}).encode()
    if isinstance(payload, list) and len(payload) == 1 and isinstance(payload[0], dict):
        payload = payload[0]
    if isinstance(payload, dict):
        parts = [str(payload.get("error") or "")]
        if payload.get("detail"):
            parts.append(json.dumps(payload["detail"], default=str))
        detail = ": ".join(p for p in parts if p)
    else:
        detail = str(payload or "")
    detail = detail or HTTPStatus(status).phrase
    return json.dumps({"detail": detail, "error": f"http_{status}"}).encode()


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
            body = normalise_error_body(error_start["status"], b"".join(chunks))
            headers = MutableHeaders(raw=list(error_start.get("headers", [])))
            headers["content-type"] = "application/json"
            headers["content-length"] = str(len(body))
            await send({**error_start, "headers": headers.raw})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_json_errors)


api_app = FastAPI(
    title=f"{SERVICE_NAME} GET routes",
    docs_url=None,  # BentoML serves the whole service's OpenAPI at /docs
    redoc_url=None,
    openapi_url=None,
)
api_app.state.model_tag = "not loaded"


@api_app.exception_handler(HTTPException)
async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
    return error_response(exc.status_code, "http_error", str(exc.detail))


@api_app.exception_handler(RequestValidationError)
async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(422, "invalid_request", str(exc.errors()))


@api_app.get("/", summary="Status banner")
async def banner(request: Request) -> dict[str, str]:
    return {
        "service": SERVICE_NAME,
        "status": "ok",
        "model": request.app.state.model_tag,
        "predict": "POST /predict (multipart field 'image')",
        "docs": "/docs",
    }


@api_app.get("/health", summary="Process liveness", response_model=HealthResponse)
async def health() -> HealthResponse:
    return HealthResponse(status="ok")
