"""HTTP-level checks on upload requests, before BentoML parses them.

Why a middleware and not checks inside the API function: BentoML's form parsing
runs before our code and, on bad input, either answers 500 (a binary field with
an unexpected name is fed to ``json.loads``), answers 4xx with a JSON *array*
body, or fetches a URL given in place of a file (an SSRF surface). So requests
to the upload routes are checked here first: size, content type, the form's
fields. Only a well-formed request with one image file reaches BentoML.

URL strings in the file field are refused on purpose: the service never
fetches on a client's behalf.

The JSON (LLM) routes get the same treatment for what BentoML does not check:
a form sent there (BentoML answered 500), and the body size. On every guarded
route a body that stalls is answered 408 instead of waiting for BentoML's 60 s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import anyio
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tikka.api import error_response

# Declared types we accept besides image/*: what curl and many clients send
# when they cannot guess; the bytes are sniffed by the decoder anyway.
GENERIC_CONTENT_TYPES = {"", "application/octet-stream", "binary/octet-stream"}
# How much of an oversized body we read and discard so the client gets the 413
# instead of a reset connection; beyond this we answer and let the connection drop.
DRAIN_FACTOR = 4


UPLOAD_STATE_KEY = "tikka_upload"


@dataclass(frozen=True)
class UploadInfo:
    """What the guard learnt about the upload, for the API function (BentoML hands it a temp path)."""

    filename: str
    content_type: str
    size: int | None


def upload_info(request: Request) -> UploadInfo:
    return request.scope["state"][UPLOAD_STATE_KEY]


class RequestRejected(Exception):
    def __init__(self, status_code: int, error: str, detail: str):
        super().__init__(detail)
        self.status_code, self.error, self.detail = status_code, error, detail


class UploadGuard:
    def __init__(
        self, app: ASGIApp, paths: Iterable[str], field: str, max_bytes: int,
        json_paths: Iterable[str] = (), max_json_bytes: int = 64 * 1024, idle_timeout_s: float = 10.0,
    ):
        self.app = app
        self.paths = frozenset(paths)
        self.field = field
        self.max_bytes = max_bytes
        self.json_paths = frozenset(json_paths)
        self.max_json_bytes = max_json_bytes
        self.idle_timeout_s = idle_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"].rstrip("/") if scope["type"] == "http" and scope["method"] == "POST" else None
        if path in self.json_paths:
            await self.check_json_route(scope, receive, send)
            return
        if path not in self.paths:
            await self.app(scope, receive, send)
            return
        try:
            try:
                self.check_headers(Headers(scope=scope))
            except RequestRejected:
                await self.drain(receive, 0, more_body=True)
                raise
            body = await self.read_body(receive, self.max_bytes, "upload_too_large")
            upload = await self.check_form(scope, body, receive)
        except RequestRejected as exc:
            await error_response(exc.status_code, exc.error, exc.detail)(scope, receive, send)
            return
        except ClientGone:
            return
        scope.setdefault("state", {})[UPLOAD_STATE_KEY] = upload
        await self.app(scope, replay(body, then=receive), send)

    async def check_json_route(self, scope: Scope, receive: Receive, send: Send) -> None:
        """JSON routes take JSON: BentoML parsed a multipart body sent to one as a form and answered 500."""
        media_type = Headers(scope=scope).get("content-type", "").split(";")[0].strip().lower()
        if media_type.startswith("multipart/") or media_type == "application/x-www-form-urlencoded":
            await self.drain(receive, 0, more_body=True)
            detail = f"send a JSON body (Content-Type: application/json), not {media_type}"
            await error_response(415, "unsupported_media_type", detail)(scope, receive, send)
            return
        # Read whole (JSON bodies here are a prompt and a few options), but never
        # more than max_json_bytes: a 100 MB body used to be read whole.
        try:
            declared = Headers(scope=scope).get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_json_bytes:
                await self.drain(receive, 0, more_body=True)
                raise RequestRejected(413, "request_too_large", self.too_large(int(declared), self.max_json_bytes))
            body = await self.read_body(receive, self.max_json_bytes, "request_too_large")
        except RequestRejected as exc:
            await error_response(exc.status_code, exc.error, exc.detail)(scope, receive, send)
            return
        except ClientGone:
            return
        await self.app(scope, replay(body, then=receive), send)

    def check_headers(self, headers: Headers) -> None:
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise RequestRejected(400, "bad_request", "Content-Length is not a number")
            if int(declared) > self.max_bytes:
                raise RequestRejected(413, "upload_too_large", self.too_large(int(declared), self.max_bytes))
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "multipart/form-data":
            raise RequestRejected(
                415,
                "unsupported_media_type",
                f"send the photo as multipart/form-data in the file field '{self.field}'"
                f" (got Content-Type {media_type or 'none'!r})",
            )

    async def read_body(self, receive: Receive, limit: int, error: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                # A Content-Length larger than the body, or a stalled client, used to
                # hold the request until BentoML's 60 s timeout, then a bare 504.
                with anyio.fail_after(self.idle_timeout_s):
                    message = await receive()
            except TimeoutError:
                raise RequestRejected(
                    408, "request_timeout",
                    f"no body bytes for {self.idle_timeout_s:g} s after {size} bytes; send the whole body",
                ) from None
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self.drain(receive, size, message.get("more_body", False))
                raise RequestRejected(413, error, self.too_large(size, limit, at_least=True))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def drain(self, receive: Receive, size: int, more_body: bool) -> None:
        while more_body and size <= DRAIN_FACTOR * self.max_bytes:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            more_body = message.get("more_body", False)

    async def check_form(self, scope: Scope, body: bytes, receive: Receive) -> UploadInfo:
        request = Request(scope, replay(body, then=receive))
        try:
            form = await request.form(max_files=4, max_fields=16)
        except (MultiPartException, HTTPException) as exc:
            # Starlette wraps the parser's MultiPartException in HTTPException(400)
            # whenever the scope has an app, as it does under BentoML.
            detail = getattr(exc, "message", None) or getattr(exc, "detail", exc)
            raise RequestRejected(400, "malformed_form", f"the multipart body is malformed: {detail}") from None
        try:
            values = form.getlist(self.field)
            others = sorted(set(form.keys()) - {self.field})
            # Text fields are ignored: clients of the deployment this one replaces
            # send some (its Streamlit app sends `label` with the photo). A file in
            # another field is refused: BentoML answered such a request with a 500.
            unexpected = [k for k in others if any(isinstance(v, UploadFile) for v in form.getlist(k))]
            if not values:
                got = f"; the form had {others}" if others else ""
                raise RequestRejected(
                    422, "missing_field", f"the multipart file field '{self.field}' is required{got}"
                )
            if unexpected:
                raise RequestRejected(
                    400,
                    "unexpected_field",
                    f"unexpected files in form fields {unexpected}; send the photo in the file field '{self.field}'",
                )
            if len(values) > 1:
                raise RequestRejected(400, "too_many_files", f"send one file in '{self.field}'")
            (value,) = values
            if not isinstance(value, UploadFile):
                raise RequestRejected(
                    400,
                    "not_a_file",
                    f"'{self.field}' must be an uploaded file; URLs and text are not fetched"
                    " or decoded by this service",
                )
            declared = (value.content_type or "").split(";")[0].strip().lower()
            if not declared.startswith("image/") and declared not in GENERIC_CONTENT_TYPES:
                raise RequestRejected(
                    415,
                    "unsupported_media_type",
                    f"'{self.field}' was declared as {declared!r}; upload a JPEG, PNG, WebP or GIF",
                )
            return UploadInfo(filename=value.filename or "", content_type=declared, size=value.size)
        finally:
            await form.close()

    @staticmethod
    def too_large(size: int, limit: int, at_least: bool = False) -> str:
        return f"the request body is {'over ' if at_least else ''}{size} bytes; the limit is {limit} bytes"


class ClientGone(Exception):
    """The client disconnected while sending the body."""


def replay(body: bytes, then: Receive) -> Receive:
    """A receive() that hands the already-read body on once, then the real channel.

    Later calls go to the real ``receive`` so that disconnect detection keeps working.
    """
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await then()

    return receive
