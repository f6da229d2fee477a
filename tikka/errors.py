"""Every error answer of the service: one hierarchy, raised where the failure happens,
with its status, its code and its headers. No web framework here: decoding an image
raises these without importing one. ``tikka.http.errors`` renders them as
``{"detail": str, "error": code}``.

The codes and statuses are the public contract: the README's error table, which
tests compare with ``CODES``.
"""

from __future__ import annotations

from http import HTTPStatus


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
