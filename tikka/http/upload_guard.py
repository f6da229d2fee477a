"""HTTP-level checks on upload requests, before BentoML parses them.

Why a middleware and not checks inside the API function: BentoML's form parsing
runs before our code and, on bad input, either answers 500 (a binary field with
an unexpected name is fed to ``json.loads``), answers 4xx with a JSON *array*
body, or fetches a URL given in place of a file (an SSRF surface). So requests
to the upload routes are checked here first: size, content type, the form's
fields. Only a well-formed request with one image file reaches BentoML.

URL strings in the file field are refused on purpose: the service never
fetches on a client's behalf.

The JSON (LLM) routes get the same treatment: a form sent there (BentoML answered
500), the body size, and the body against the route's request schema, because
BentoML logs a failed validation with its traceback and the input in it (a user's
prompt, in the log). On every guarded route a body that stalls is answered 408
instead of waiting for BentoML's 60 s.

Every refusal is raised as an error of tikka/errors.py and rendered by tikka/http/errors.py's ErrorBoundary.

Uploads stay in memory (the deployment this one replaces promised images are
"processed transiently in-memory"): see ``ImageUpload`` and the spool size below.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

import anyio
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError, core_schema
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tikka.bulk.gcs import check_request
from tikka.errors import (
    BadRequest,
    BadSource,
    InvalidRequest,
    MalformedForm,
    MissingField,
    NotAFile,
    RequestTimeout,
    RequestTooLarge,
    ServiceError,
    TooManyFiles,
    TooManyRequests,
    UnexpectedField,
    UnsupportedMediaType,
    UploadTooLarge,
)
from tikka.http.errors import validation_message
from tikka.http.routes import route_of
from tikka.model.formats import accepted_names

ARCHIVE_FIELD, SOURCE_FIELD = "archive", "source"
# Declared types we accept besides image/*: what curl and many clients send
# when they cannot guess; the bytes are sniffed by the decoder anyway.
GENERIC_CONTENT_TYPES = {"", "application/octet-stream", "binary/octet-stream"}


def check_text_field(name: str, values: list) -> None:
    """BentoML reads every extra text field with ``json.loads`` and keeps the text where
    that fails as JSON; a value that fails otherwise (digits past Python's int-string limit,
    nesting past the recursion limit) was a 500. Refused here, said plainly."""
    for value in values:
        try:
            json.loads(value)
        except json.JSONDecodeError:
            pass  # plain text: BentoML keeps it as a string, and the API ignores it
        except (ValueError, RecursionError) as exc:
            raise MalformedForm(
                f"the text field {name!r} cannot be read ({type(exc).__name__}); send short plain values"
            ) from None


def safe_filename(raw: str | None) -> str:
    """The client's file name as the API echoes it back: its last path component (POSIX or
    Windows), without control or format characters (NUL, bidi overrides such as U+202E)
    or markup characters, at most 255 characters. Clients display it; it is never opened."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C" and ch not in "<>\"'`")
    return name.strip()[:255]


class ImageUpload(PurePosixPath):
    """The uploaded file as an API parameter, its bytes held in memory.

    A ``Path`` parameter made BentoML write every upload to a temporary file before
    the API function ran. BentoML treats any ``PurePath`` subclass as a file field
    (multipart, ``format: binary`` in the OpenAPI document) but attaches its
    temp-file validator to the pathlib classes only, so this subclass is validated
    here, straight from Starlette's in-memory ``UploadFile``. The path is the
    client's file name and is never opened.
    """

    data: bytes
    filename: str

    @classmethod
    def from_upload(cls, value: Any) -> ImageUpload:
        if not isinstance(value, UploadFile):  # the guard refuses these first; this is the backstop
            raise PydanticCustomError("not_a_file", "must be an uploaded file")
        filename = safe_filename(value.filename)
        upload = cls(filename or "upload")
        upload.data = value.file.read()
        upload.filename = filename
        return upload

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(cls.from_upload)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, str]:
        # As BentoML's own file types (_bentoml_sdk.validators.FileSchema): "type: file" in
        # the validation schema (/schema.json) is what makes bentoml.SyncHTTPClient and
        # AsyncHTTPClient send the field as a multipart file; OpenAPI gets string/binary.
        if handler.mode == "validation":
            return {"type": "file", "format": "binary"}
        return {"type": "string", "format": "binary"}


class ArchiveUpload(ImageUpload):
    """An uploaded zip or tar (``bulk_classify``), held in memory like an image."""


def with_lower_case_media_type(scope: Scope) -> Scope:
    """The scope with the Content-Type's media type in lower case (its parameters, such as
    the case-sensitive boundary, untouched). Media types are case-insensitive, but BentoML
    matched "multipart/form-data" exactly and parsed ``Multipart/Form-Data`` as JSON."""
    headers = []
    for name, value in scope["headers"]:
        if name.lower() == b"content-type":
            media_type, separator, parameters = value.partition(b";")
            value = media_type.strip().lower() + separator + parameters
        headers.append((name, value))
    return {**scope, "headers": headers}


class UploadGuard:
    def __init__(
        self,
        app: ASGIApp,
        paths: Iterable[str],
        field: str,
        max_bytes: int,
        json_paths: Mapping[str, type[BaseModel]] = {},
        max_json_bytes: int = 64 * 1024,
        archive_paths: Iterable[str] = (),
        max_archive_bytes: int = 64 * 1024 * 1024,
        idle_timeout_s: float = 10.0,
        body_timeout_s: float = 30.0,
        max_buffered_bytes: int = 256 * 1024 * 1024,
    ):
        self.app = app
        self.paths = frozenset(paths)
        self.field = field
        self.max_bytes = max_bytes
        self.json_paths = dict(json_paths)
        self.max_json_bytes = max_json_bytes
        self.archive_paths = frozenset(archive_paths)
        self.max_archive_bytes = max_archive_bytes
        self.idle_timeout_s = idle_timeout_s
        self.body_timeout_s = body_timeout_s
        # Bodies are read whole before a request is admitted (tikka/http/stack.py), so the number
        # being read is not bounded by the concurrency limit: their bytes are, here. A
        # trickling client holds a few bytes of it; a flood of large bodies gets 429s.
        self.max_buffered_bytes = max_buffered_bytes
        self.buffered_bytes = 0  # one event loop per worker process: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_of(scope) if scope["type"] == "http" and scope["method"] == "POST" else None
        if path not in self.json_paths and path not in self.paths and path not in self.archive_paths:
            await self.app(scope, receive, send)
            return
        held = [0]  # this request's share of buffered_bytes, until it is answered
        try:
            if path in self.json_paths:
                body = await self.check_json_route(scope, receive, self.json_paths[path], held)
            elif path in self.archive_paths:
                body = await self.check_archive_route(scope, receive, held)
            else:
                body = await self.check_upload_route(scope, receive, held)
            await self.app(with_lower_case_media_type(scope), replay(body, then=receive), send)
        except ClientGone:
            return
        finally:
            self.buffered_bytes -= held[0]

    async def check_upload_route(self, scope: Scope, receive: Receive, held: list[int]) -> bytes:
        self.check_headers(Headers(scope=scope), self.max_bytes)
        body = await self.read_body(receive, self.max_bytes, UploadTooLarge, held)
        await self.check_form(scope, body, receive)
        return body

    async def check_archive_route(self, scope: Scope, receive: Receive, held: list[int]) -> bytes:
        """bulk_classify: a form with a file in ``archive``, or ``source`` text, within the archive limit.
        Which of the two, and what the archive holds, the task itself checks."""
        # A source alone may come as a plain form (curl -d source=gs://...).
        self.check_headers(
            Headers(scope=scope),
            self.max_archive_bytes,
            "the archive in the file field 'archive'",
            ("multipart/form-data", "application/x-www-form-urlencoded"),
        )
        body = await self.read_body(receive, self.max_archive_bytes, UploadTooLarge, held)
        form = await self.read_form(scope, body, receive)
        try:
            files = [key for key in form if any(isinstance(v, UploadFile) for v in form.getlist(key))]
            if set(files) - {ARCHIVE_FIELD}:
                raise UnexpectedField(
                    f"unexpected files in form fields {sorted(set(files) - {ARCHIVE_FIELD})};"
                    f" send the archive in the file field '{ARCHIVE_FIELD}'"
                )
            if len(form.getlist(ARCHIVE_FIELD)) > 1:
                raise TooManyFiles(f"send one archive in '{ARCHIVE_FIELD}'")
            if ARCHIVE_FIELD in form and ARCHIVE_FIELD not in files:
                raise NotAFile(f"'{ARCHIVE_FIELD}' must be an uploaded file; URLs are not fetched (use 'source')")
            for name in set(form) - {ARCHIVE_FIELD}:
                check_text_field(name, form.getlist(name))
            sources = form.getlist(SOURCE_FIELD)
            if len(sources) > 1:
                raise BadSource("send one `source`")
            check_request(ARCHIVE_FIELD in form, str(sources[0]) if sources else None)
        finally:
            await form.close()
        return body

    async def check_json_route(self, scope: Scope, receive: Receive, schema: type[BaseModel], held: list[int]) -> bytes:
        """JSON routes take JSON: BentoML parsed a multipart body sent to one as a form and answered 500."""
        media_type = Headers(scope=scope).get("content-type", "").split(";")[0].strip().lower()
        if media_type.startswith("multipart/") or media_type == "application/x-www-form-urlencoded":
            raise UnsupportedMediaType(f"send a JSON body (Content-Type: application/json), not {media_type}")
        # Read whole (JSON bodies here are a prompt and a few options), but never
        # more than max_json_bytes: a 100 MB body used to be read whole.
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_json_bytes:
            raise RequestTooLarge(self.too_large(int(declared), self.max_json_bytes))
        body = await self.read_body(receive, self.max_json_bytes, RequestTooLarge, held)
        try:
            schema.model_validate_json(body or b"{}")
        except ValidationError as exc:
            # The messages only (never include_input): the input may be a user's prompt.
            raise InvalidRequest("; ".join(map(validation_message, exc.errors(include_input=False)))) from None
        return body

    def check_headers(
        self, headers: Headers, max_bytes: int, what: str = "", media_types: tuple[str, ...] = ("multipart/form-data",)
    ) -> None:
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise BadRequest("Content-Length is not a number")
            if int(declared) > max_bytes:
                raise UploadTooLarge(self.too_large(int(declared), max_bytes))
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in media_types:
            raise UnsupportedMediaType(
                f"send {what or f'the photo in the file field {self.field!r}'} as multipart/form-data"
                f" (got Content-Type {media_type or 'none'!r})",
            )

    async def read_body(self, receive: Receive, limit: int, too_large: type[ServiceError], held: list[int]) -> bytes:
        """The whole body, within both limits: a stalled client (no bytes for ``idle_timeout_s``;
        a Content-Length larger than the body, say) and a trickling one (a byte every few
        seconds, each gap under the idle limit: ``body_timeout_s`` for the whole body).
        Either used to hold the request until BentoML's 60 s timeout, then a bare 504."""
        chunks: list[bytes] = []
        size = 0
        deadline = anyio.current_time() + self.body_timeout_s
        while True:
            left = deadline - anyio.current_time()
            try:
                with anyio.fail_after(min(self.idle_timeout_s, max(left, 0))):
                    message = await receive()
            except TimeoutError:
                if left <= self.idle_timeout_s:
                    detail = f"the body took over {self.body_timeout_s:g} s ({size} bytes by then)"
                else:
                    detail = f"no body bytes for {self.idle_timeout_s:g} s after {size} bytes"
                raise RequestTimeout(f"{detail}; send the whole body") from None
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(self.too_large(size, limit, at_least=True))
            if self.buffered_bytes + len(chunk) > self.max_buffered_bytes:
                raise TooManyRequests(
                    f"the service is receiving {self.buffered_bytes} bytes of bodies at once; retry in 1 s",
                    {"Retry-After": "1"},
                )
            self.buffered_bytes += len(chunk)
            held[0] += len(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def read_form(scope: Scope, body: bytes, receive: Receive):
        request = Request(scope, replay(body, then=receive))
        try:
            return await request.form(max_files=4, max_fields=16)
        except (MultiPartException, HTTPException) as exc:
            # Starlette wraps the parser's MultiPartException in HTTPException(400)
            # whenever the scope has an app, as it does under BentoML.
            detail = getattr(exc, "message", None) or getattr(exc, "detail", exc)
            raise MalformedForm(f"the multipart body is malformed: {detail}") from None

    async def check_form(self, scope: Scope, body: bytes, receive: Receive) -> None:
        form = await self.read_form(scope, body, receive)
        try:
            values = form.getlist(self.field)
            others = sorted(set(form.keys()) - {self.field})
            # Text fields are ignored: clients of the deployment this one replaces
            # send some (its Streamlit app sends `label` with the photo). A file in
            # another field is refused: BentoML answered such a request with a 500.
            unexpected = [k for k in others if any(isinstance(v, UploadFile) for v in form.getlist(k))]
            if not values:
                got = f"; the form had {others}" if others else ""
                raise MissingField(f"the multipart file field '{self.field}' is required{got}")
            if unexpected:
                raise UnexpectedField(
                    f"unexpected files in form fields {unexpected}; send the photo in the file field '{self.field}'",
                )
            if len(values) > 1:
                raise TooManyFiles(f"send one file in '{self.field}'")
            for name in others:
                check_text_field(name, form.getlist(name))
            (value,) = values
            if not isinstance(value, UploadFile):
                raise NotAFile(
                    f"'{self.field}' must be an uploaded file; URLs and text are not fetched"
                    " or decoded by this service",
                )
            declared = (value.content_type or "").split(";")[0].strip().lower()
            if not declared.startswith("image/") and declared not in GENERIC_CONTENT_TYPES:
                raise UnsupportedMediaType(
                    f"'{self.field}' was declared as {declared!r}; upload an image ({accepted_names()})",
                )
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
