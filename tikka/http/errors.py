"""Error answers on the wire: every ``tikka.errors.ServiceError`` rendered in one place
(``render``) as ``{"detail": str, "error": code}``.

- Middlewares (upload guard, keys, rate and concurrency limits) raise; ``ErrorBoundary``
  renders what they raise, inside CORS, so browsers can read every error.
- API functions raise too; ``services.reject`` renders there, because BentoML turns
  anything an API function raises into a logged 500.
- Bodies the frameworks write themselves (BentoML's plain-text 404s, its JSON arrays,
  FastAPI's 405s, Starlette's CORS refusals) are the one thing rewritten afterwards:
  ``from_framework_body`` maps them onto the hierarchy.
"""

from __future__ import annotations

import json

import anyio
from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tikka.errors import (
    BadRequest,
    HTTPError,
    InvalidRequest,
    ServiceError,
    ServiceTimeout,
    TaskNotFinished,
    TaskNotFound,
)
from tikka.http.schemas import ErrorResponse


def render(error: ServiceError) -> JSONResponse:
    body = ErrorResponse(error=error.error, detail=error.detail).model_dump()
    return JSONResponse(body, status_code=error.status_code, headers=error.headers or None)


def outer_error(status: int, message: str) -> JSONResponse:
    """What BentoML's timeout and uvicorn's HTTP parser answer outside every middleware
    (tikka/bentoml_patches.py routes them here), in the error shape."""
    if status == 504:
        return render(ServiceTimeout(message))
    if status == 400:
        return render(BadRequest(message))
    return render(HTTPError(status, message))


def validation_message(item: object) -> str:
    """One pydantic error as ``field: message``; never the input value (it may be a prompt)."""
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
    return f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", item))


# BentoML's task routes answer {"error": "task_id not found"} (404) and {"error": "task <id> is
# not completed yet"} (400): named by the last word, as the errors they are.
BENTOML_TASK_ERRORS = {(404, "found"): TaskNotFound, (400, "yet"): TaskNotFinished}


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
        if task_error := BENTOML_TASK_ERRORS.get((status, str(detail).split(" ")[-1])):
            return task_error(str(detail))
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
        if scope["type"] == "websocket":
            await refuse_websocket(scope, receive, send)
            return
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
            await render(exc)(scope, receive, send)


async def refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """The API has no WebSocket routes; the upgrade was a 403 with an empty body. An HTTP
    answer in the error shape instead, where the server offers the ASGI extension for it."""
    await receive()  # websocket.connect
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    response = render(HTTPError(404, "no WebSocket endpoint here: the API is plain HTTP"))
    await send(
        {"type": "websocket.http.response.start", "status": response.status_code, "headers": response.raw_headers}
    )
    await send({"type": "websocket.http.response.body", "body": response.body})


async def drain(receive: Receive, max_bytes: int, idle_s: float = 1.0, total_s: float = 3.0) -> None:
    """Read and drop the rest of a request body; stop at ``max_bytes``, a pause of ``idle_s``
    (a stalled client: its 408 should not wait any longer) or after ``total_s`` (a trickling
    one, a byte a second: draining it held each 408 until the client gave up)."""
    size = 0
    with anyio.move_on_after(total_s):
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
        status, body = error.status_code, render(error).body
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
        return render(BadRequest(response.body.decode(), headers))
