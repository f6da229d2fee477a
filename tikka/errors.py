"""Every error answer of the service: one hierarchy, raised where the failure happens,
rendered in one place (``ServiceError.response``) as ``{"detail": str, "error": code}``.

- Middlewares (upload guard, keys, rate and concurrency limits) raise; ``ErrorBoundary``
  renders what they raise, inside CORS, so browsers can read every error.
- API functions raise too; ``services.reject`` renders there, because BentoML turns
  anything an API function raises into a logged 500.
- Bodies the frameworks write themselves (BentoML's plain-text 404s, its JSON arrays,
  FastAPI's 405s, Starlette's CORS refusals) are the one thing rewritten afterwards:
  ``from_framework_body`` maps them onto this hierarchy.

The codes and statuses are the public contract: the README's error table, which
tests compare with ``CODES``.
"""

from __future__ import annotations

import json
from http import HTTPStatus

import anyio
from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tikka.schemas import ErrorResponse


class ServiceError(Exception):
    """An expected failure, answered with ``status_code``, its ``error`` code and ``headers``."""

    status_code: int = 500
    error: str = "internal_error"
    headers: dict[str, str] = {}

    def __init__(self, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        if headers:
            self.headers = {**self.headers, **headers}

    def response(self) -> JSONResponse:
        body = ErrorResponse(error=self.error, detail=self.detail).model_dump()
        return JSONResponse(body, status_code=self.status_code, headers=self.headers or None)


class HTTPError(ServiceError):
    """An answer the web framework chose (unknown route, wrong method): code ``http_<status>``."""

    def __init__(self, status_code: int, detail: str = "", headers: dict[str, str] | None = None):
        super().__init__(detail or HTTPStatus(status_code).phrase, headers)
        self.status_code = status_code
        self.error = f"http_{status_code}"


# ---- The request is at fault (4xx) -----------------------------------------------------


class BadRequest(ServiceError):
    status_code = 400
    error = "bad_request"


class EmptyUpload(BadRequest):
    error = "empty_upload"


class NotAnImage(BadRequest):
    error = "not_an_image"


class NotAFile(BadRequest):
    error = "not_a_file"


class UnexpectedField(BadRequest):
    error = "unexpected_field"


class TooManyFiles(BadRequest):
    error = "too_many_files"


class MalformedForm(BadRequest):
    error = "malformed_form"


class Unauthorized(ServiceError):
    status_code = 401
    error = "unauthorized"


class RequestTimeout(ServiceError):
    status_code = 408
    error = "request_timeout"


class UploadTooLarge(ServiceError):
    status_code = 413
    error = "upload_too_large"


class RequestTooLarge(ServiceError):
    status_code = 413
    error = "request_too_large"


class ImageTooLarge(ServiceError):
    status_code = 413
    error = "image_too_large"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    error = "unsupported_media_type"


class MissingField(ServiceError):
    status_code = 422
    error = "missing_field"


class InvalidRequest(ServiceError):
    status_code = 422
    error = "invalid_request"


class InvalidPrompt(InvalidRequest):
    error = "invalid_prompt"


class TooManyRequests(ServiceError):
    status_code = 429
    error = "too_many_requests"


# ---- The service cannot answer now (5xx) -----------------------------------------------


class ExplanationUnavailable(ServiceError):
    status_code = 501
    error = "explanation_unavailable"


class LLMFailed(ServiceError):
    status_code = 502
    error = "llm_error"


class ClassifierBusy(ServiceError):
    status_code = 503
    error = "classifier_busy"
    headers = {"Retry-After": "2"}


class ClassifierUnavailable(ServiceError):
    status_code = 503
    error = "classifier_unavailable"
    headers = {"Retry-After": "5"}


class LLMUnavailable(ServiceError):
    status_code = 503
    error = "llm_unavailable"
    headers = {"Retry-After": "5"}


class LLMBusy(ServiceError):
    status_code = 503
    error = "llm_busy"
    headers = {"Retry-After": "5"}


class LLMModelMissing(ServiceError):
    status_code = 503
    error = "llm_model_missing"


class ClassifierTimeout(ServiceError):
    status_code = 504
    error = "classifier_timeout"


class LLMTimeout(ServiceError):
    status_code = 504
    error = "llm_timeout"


def _subclasses(cls: type[ServiceError]) -> list[type[ServiceError]]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


# The public error codes -> their class (and so their status).
CODES: dict[str, type[ServiceError]] = {cls.error: cls for cls in _subclasses(ServiceError) if cls is not HTTPError}


def validation_message(item: object) -> str:
    """One pydantic error as ``field: message``; never the input value (it may be a prompt)."""
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
    return f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", item))


def from_framework_body(status: int, body: bytes) -> ServiceError | None:
    """A framework's error body -> the error it means; None if it is already ours.

    BentoML answers plain text for unknown routes and wrong methods, a JSON array
    for 4xx (an open upstream bug), a generic message for 5xx; FastAPI answers
    ``{"detail": str}``, and ``{"detail": [pydantic errors]}`` for invalid input.
    """
    try:
        payload = json.loads(body) if body else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = body.decode("utf-8", "replace").strip()
    if isinstance(payload, dict) and isinstance(payload.get("detail"), str) and isinstance(payload.get("error"), str):
        return None
    if isinstance(payload, list) and len(payload) == 1 and isinstance(payload[0], dict):
        payload = payload[0]
    if isinstance(payload, dict) and isinstance(payload.get("detail"), list):
        return InvalidRequest("; ".join(validation_message(item) for item in payload["detail"]))
    if isinstance(payload, dict):
        detail = payload.get("detail") if isinstance(payload.get("detail"), str) else payload.get("error")
        return HTTPError(status, str(detail or ""))
    return HTTPError(status, str(payload or ""))


class ErrorBoundary:
    """Renders the errors raised by the middlewares inside it, and rewrites framework
    error bodies (see above). Only error answers are buffered; the rest stream through.

    Before answering a raised error it reads and discards what is left of the request
    body (up to ``max_drain_bytes``): a server that answers and closes while the client
    is still sending resets the connection, and the client sees a network error instead
    of the 413 or 429 (in the overload test, now and then a shed request was lost that way).
    """

    def __init__(self, app: ASGIApp, max_drain_bytes: int):
        self.app = app
        self.max_drain_bytes = max_drain_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error_start: Message | None = None
        chunks: list[bytes] = []
        body_done = False

        async def tracked_receive() -> Message:
            nonlocal body_done
            message = await receive()
            body_done = body_done or message["type"] == "http.disconnect" or not message.get("more_body", False)
            return message

        async def send_our_errors(message: Message) -> None:
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
            await send_rewritten(error_start, b"".join(chunks), send)

        try:
            await self.app(scope, tracked_receive, send_our_errors)
        except ServiceError as exc:
            if not body_done:
                await drain(tracked_receive, self.max_drain_bytes)
            await exc.response()(scope, receive, send)


async def drain(receive: Receive, max_bytes: int, idle_s: float = 1.0) -> None:
    """Read and drop the rest of a request body; stop at ``max_bytes`` or a pause of ``idle_s``
    (a stalled client: its 408 should not wait any longer)."""
    size = 0
    while size <= max_bytes:
        message = None
        with anyio.move_on_after(idle_s):
            message = await receive()
        if message is None or message["type"] == "http.disconnect" or not message.get("more_body", False):
            return
        size += len(message.get("body", b""))


async def send_rewritten(start: Message, body: bytes, send: Send) -> None:
    error = from_framework_body(start["status"], body)
    status = start["status"]
    if error is not None:
        status, body = error.status_code, error.response().body
    headers = MutableHeaders(raw=list(start.get("headers", [])))
    headers["content-type"] = "application/json"
    headers["content-length"] = str(len(body))
    await send({**start, "status": status, "headers": headers.raw})
    await send({"type": "http.response.body", "body": body})


class CORS(CORSMiddleware):
    """Starlette's CORS, whose refusal of a preflight is an error answer like any other
    (it was a plain-text 400, written outside every other middleware)."""

    def preflight_response(self, request_headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        headers = {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}
        return BadRequest(response.body.decode(), headers).response()
