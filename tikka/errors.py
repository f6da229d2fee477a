"""Every error answer of the service: one hierarchy, raised where the failure happens,
with its status, its code and its headers. No web framework here: decoding an image
raises these without importing one. ``tikka.http.errors`` renders them as
``{"detail": str, "error": code}``.

The codes and statuses are the public contract: docs/reference/errors.md, generated
from these classes (``make docs-reference``).
"""

from __future__ import annotations

from http import HTTPStatus


class ServiceError(Exception):
    """An expected failure, answered with ``status_code``, its ``error`` code and ``headers``."""

    status_code: int = 500
    error: str = "internal_error"
    headers: dict[str, str] = {}
    # For the documentation (the OpenAPI examples, docs/reference/errors.md): an example
    # detail, and the headers an answer carries besides ``headers``' defaults.
    example: str = ""
    header_names: tuple[str, ...] = ()

    def __init__(self, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        if headers:
            self.headers = {**self.headers, **headers}


class HTTPError(ServiceError):
    """An answer the web framework chose (unknown route, wrong method): code ``http_<status>``."""

    def __init__(self, status_code: int, detail: str = "", headers: dict[str, str] | None = None):
        super().__init__(detail or HTTPStatus(status_code).phrase, headers)
        self.status_code = status_code
        self.error = f"http_{status_code}"


# ---- The request is at fault (4xx) -----------------------------------------------------


class BadRequest(ServiceError):
    """A `Content-Length` header that is not a number, or a CORS preflight from an origin not in `TIKKA_CORS_ORIGINS`."""

    status_code = 400
    error = "bad_request"
    example = "Content-Length is not a number"


class EmptyUpload(BadRequest):
    """The uploaded file is empty."""

    error = "empty_upload"
    example = "the uploaded file is empty"


class NotAnImage(BadRequest):
    """The file is not an image, is truncated or corrupt, or is in a format not accepted (docs/reference/formats.md)."""

    error = "not_an_image"
    example = "the upload is not a readable image; accepted formats: JPEG, PNG, WebP, GIF, HEIC / HEIF, AVIF"


class NotAFile(BadRequest):
    """A text value (a URL, say) instead of a file in `image`: URLs are never fetched."""

    error = "not_a_file"
    example = "'image' must be a file upload, not a text value; URLs are never fetched"


class UnexpectedField(BadRequest):
    """A file in a field other than `image` (other text fields are ignored)."""

    error = "unexpected_field"
    example = "unexpected file field 'file': send the photo in 'image'"


class TooManyFiles(BadRequest):
    """Two or more files in `image`."""

    error = "too_many_files"
    example = "send one file in 'image'"


class MalformedForm(BadRequest):
    """A malformed multipart body: no or a wrong boundary, a part without Content-Disposition."""

    error = "malformed_form"
    example = "the multipart body is malformed: missing boundary in multipart"


class NotAnArchive(BadRequest):
    """A `bulk_classify` archive that is neither a zip nor a tar (plain or gzip), or is corrupt."""

    error = "not_an_archive"
    example = "the archive is neither a zip nor a tar (plain or gzip); send one of those"


class UnsafeArchive(BadRequest):
    """A `bulk_classify` archive with a member that could escape it (`../`, an absolute name) or is a link or a device: the whole archive is refused before any member is read."""

    error = "unsafe_archive"
    example = "the archive member '../../etc/passwd' escapes the archive; nothing was classified"


class BadSource(BadRequest):
    """A `bulk_classify` request with neither or both of `archive` and `source`, a `source` that is not `gs://bucket/prefix`, or a prefix with no images (or more than `TIKKA_BULK_MAX_IMAGES`)."""

    error = "bad_source"
    example = "source must look like gs://bucket/prefix, not 's3://photos'"


class Unauthorized(ServiceError):
    """A missing or wrong API key, when keys are configured (`TIKKA_API_KEYS`, `TIKKA_METRICS_KEYS`)."""

    status_code = 401
    error = "unauthorized"
    example = "a valid API key is required: Authorization: Bearer <key> or X-API-Key"
    header_names = ("WWW-Authenticate",)


class NotTheGateway(Unauthorized):
    """A call to the classifier's own port (split deployments) without the gateway's `TIKKA_INTERNAL_TOKEN`."""

    error = "not_the_gateway"
    example = "the classifier answers only the gateway (TIKKA_INTERNAL_TOKEN as Authorization: Bearer)"
    header_names = ()


class TaskNotFound(ServiceError):
    """A `task_id` this gateway has no progress for: never submitted here, or one of more than the last 256 tasks."""

    status_code = 404
    error = "task_not_found"
    example = "no bulk task 5d0f3a8c... in this gateway's last 256 tasks"


class TaskNotFinished(ServiceError):
    """The result of a bulk task that is still running: follow its progress, then ask again."""

    status_code = 409
    error = "task_not_finished"
    example = "task 5d0f3a8c... is not completed yet"


class SourceNotFound(ServiceError):
    """A `bulk_classify` source whose bucket or prefix does not exist."""

    status_code = 404
    error = "source_not_found"
    example = "gs://photos/week-49/: the bucket or the object does not exist"


class SourceForbidden(ServiceError):
    """A `bulk_classify` source whose bucket refuses the service's credentials."""

    status_code = 403
    error = "source_forbidden"
    example = "gs://photos/week-49/: the service's credentials were refused (Forbidden)"


class RequestTimeout(ServiceError):
    """The body stalls for `TIKKA_BODY_IDLE_TIMEOUT_S` (a Content-Length larger than the body, say),
    or takes over `TIKKA_BODY_TIMEOUT_S` in all (a client trickling bytes)."""

    status_code = 408
    error = "request_timeout"
    example = "no body bytes for 10 s after 5120 bytes; send the whole body"


class UploadTooLarge(ServiceError):
    """A body over `TIKKA_MAX_UPLOAD_BYTES`."""

    status_code = 413
    error = "upload_too_large"
    example = "the upload is 12582912 bytes; the limit is 10485760"


class RequestTooLarge(ServiceError):
    """A JSON body over `TIKKA_MAX_JSON_BYTES` on the LLM routes."""

    status_code = 413
    error = "request_too_large"
    example = "the request body is 100000 bytes; the limit is 65536"


class ArchiveTooLarge(ServiceError):
    """A `bulk_classify` archive over `TIKKA_BULK_ARCHIVE_BYTES`, with more than `TIKKA_BULK_MAX_IMAGES` members, or with a member whose uncompressed size is over `TIKKA_BULK_MEMBER_BYTES` (a zip bomb): refused from the archive's index, before a member is inflated."""

    status_code = 413
    error = "archive_too_large"
    example = "the archive member 'bomb.jpg' inflates to 4294967296 bytes; the limit is 10485760"


class ImageTooLarge(ServiceError):
    """An image over `TIKKA_MAX_IMAGE_PIXELS` (decompression bombs, PNG text or ICC chunks that inflate past PIL's limits), a JPEG that costs far more to decode than its pixels (over 100 scans or 256 APP segments), or an image whose decode would take more memory than `TIKKA_DECODE_MEMORY_BYTES`."""

    status_code = 413
    error = "image_too_large"
    example = "the image has 100000000 pixels; the limit is 40000000"


class ImageTooCostly(ImageTooLarge):
    """An image whose decode took more CPU than `TIKKA_DECODE_CPU_S` (a progressive JPEG whose scans each revisit every pixel, say): the decode is stopped there."""

    error = "image_too_costly"
    example = "decoding the image took more than 1 s of CPU, the limit; it was stopped there"


class UnsupportedMediaType(ServiceError):
    """A file declared as a non-image type (`text/plain`, say), a body that is not multipart, or a form sent to an LLM route."""

    status_code = 415
    error = "unsupported_media_type"
    example = "expected a multipart/form-data upload with a field 'image'"


class MissingField(ServiceError):
    """No `image` field."""

    status_code = 422
    error = "missing_field"
    example = "the multipart form has no 'image' field"


class InvalidRequest(ServiceError):
    """A JSON body that fails validation: an empty or too long prompt, temperature or max_tokens out of range, an unknown task."""

    status_code = 422
    error = "invalid_request"
    example = "max_tokens: Input should be less than or equal to 1024"


class InvalidPrompt(InvalidRequest):
    """A prompt longer than the model's context window (Ollama's 400)."""

    error = "invalid_prompt"
    example = "the prompt is longer than the model's context window"


class TooManyRequests(ServiceError):
    """More than `TIKKA_MAX_CONCURRENCY` requests in flight, bodies past `TIKKA_MAX_BUFFERED_BODY_BYTES` being received at once, no room in the decode memory budget or no turn for a costly decode (`TIKKA_COSTLY_DECODES`) within `TIKKA_DECODE_MEMORY_WAIT_S`, or a client past its rate limit (`TIKKA_RATE_LIMIT_PER_S`); probes and `/metrics` are never shed or limited."""

    status_code = 429
    error = "too_many_requests"
    example = "more than 64 requests in flight; retry after 1 s"
    header_names = ("Retry-After",)


# ---- The service cannot answer now (5xx) -----------------------------------------------


class SourceUnreachable(ServiceError):
    """Cloud Storage did not answer for a `bulk_classify` source (the network, or `STORAGE_EMULATOR_HOST`)."""

    status_code = 502
    error = "source_unreachable"
    example = "cannot reach Cloud Storage for gs://photos/dinner/: check the network"


class ExplanationUnavailable(ServiceError):
    """`/predict/explain` for an architecture with no explanation method."""

    status_code = 501
    error = "explanation_unavailable"
    example = "no explanation method for this architecture"


class LLMFailed(ServiceError):
    """The LLM answered an error, or something that is not Ollama's API (invalid JSON, an HTML page, junk mid-stream: a stream then ends with an `error` record)."""

    status_code = 502
    error = "llm_error"
    example = "the LLM stream ended before its first record"


class ClassifierBusy(ServiceError):
    """The classifier is over its latency budget (adaptive batching)."""

    status_code = 503
    error = "classifier_busy"
    example = "the classifier is at capacity (adaptive batching latency budget); retry shortly"
    headers = {"Retry-After": "2"}


class ClassifierUnavailable(ServiceError):
    """The classifier cannot be reached (deployed apart and its pods gone; `/readyz` is then 503 too)."""

    status_code = 503
    error = "classifier_unavailable"
    example = "the classifier cannot be reached; retry shortly"
    headers = {"Retry-After": "5"}


class LLMUnavailable(ServiceError):
    """The LLM sidecar is down or unreachable within the connect timeout."""

    status_code = 503
    error = "llm_unavailable"
    example = "the LLM sidecar at http://ollama:11434 is not reachable"
    headers = {"Retry-After": "5"}


class LLMBusy(ServiceError):
    """Every LLM generation slot (`TIKKA_LLM_CONCURRENCY`) is still busy after `TIKKA_LLM_QUEUE_WAIT_S`."""

    status_code = 503
    error = "llm_busy"
    example = "the LLM is busy with other generations; retry shortly"
    headers = {"Retry-After": "5"}


class LLMModelMissing(ServiceError):
    """The configured LLM model is not pulled (Ollama's 404); the detail names the `ollama pull` command."""

    status_code = 503
    error = "llm_model_missing"
    example = "model gemma3:270m is not pulled: run `ollama pull gemma3:270m`"


class ClassifierTimeout(ServiceError):
    """The classifier gave no answer within `TIKKA_REQUEST_TIMEOUT_S`."""

    status_code = 504
    error = "classifier_timeout"
    example = "the classifier did not answer within 60 s"


class ServiceTimeout(ServiceError):
    """No answer began within `TIKKA_REQUEST_TIMEOUT_S` (BentoML's own request timeout, on any route)."""

    status_code = 504
    error = "service_timeout"
    example = "Not able to process the request in 60 seconds"


class LLMTimeout(ServiceError):
    """The LLM sent nothing for `TIKKA_LLM_READ_TIMEOUT_S`."""

    status_code = 504
    error = "llm_timeout"
    example = "the LLM sent nothing for 60 s"


def _subclasses(cls: type[ServiceError]) -> list[type[ServiceError]]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


# The public error codes -> their class (and so their status).
CODES: dict[str, type[ServiceError]] = {cls.error: cls for cls in _subclasses(ServiceError) if cls is not HTTPError}
