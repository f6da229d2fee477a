"""Typed errors, each named for what went wrong and carrying its HTTP answer."""

from __future__ import annotations


class ServiceError(Exception):
    """An expected failure answered as ``{"detail": str(self), "error": error}``."""

    status_code = 500
    error = "internal_error"
    headers: dict[str, str] = {}


class ClassifierBusy(ServiceError):
    status_code = 503
    error = "classifier_busy"
    headers = {"Retry-After": "2"}


class ClassifierUnavailable(ServiceError):
    status_code = 503
    error = "classifier_unavailable"
    headers = {"Retry-After": "5"}


class ClassifierTimeout(ServiceError):
    status_code = 504
    error = "classifier_timeout"


class ExplanationUnavailable(ServiceError):
    status_code = 501
    error = "explanation_unavailable"


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


class LLMTimeout(ServiceError):
    status_code = 504
    error = "llm_timeout"


class LLMFailed(ServiceError):
    status_code = 502
    error = "llm_error"


class InvalidPrompt(ServiceError):
    status_code = 422
    error = "invalid_prompt"
