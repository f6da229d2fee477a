"""The Bento's public HTTP API, with every failure turned into a message for people."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx

from frontend import config


class BackendError(Exception):
    """Something the page shows as it is."""


class Backend:
    def __init__(self, base_url: str, timeout: float = 60.0, llm_timeout: float = 180.0, api_key: str | None = None):
        self.base_url = base_url.rstrip("/")
        key = api_key or config.api_key()
        self.headers = {"X-API-Key": key} if key else {}
        self.timeout = httpx.Timeout(timeout, connect=5.0)
        self.llm_timeout = httpx.Timeout(llm_timeout, connect=5.0)

    # --- classification -------------------------------------------------------

    def predict(self, filename: str, jpeg: bytes) -> dict[str, Any]:
        return self._post_image("/v1/predict", filename, jpeg)

    def explain(self, filename: str, jpeg: bytes) -> dict[str, Any]:
        return self._post_image("/v1/predict/explain", filename, jpeg)

    def _post_image(self, path: str, filename: str, jpeg: bytes) -> dict[str, Any]:
        with errors("the classifier"):
            response = httpx.post(
                f"{self.base_url}{path}",
                files={"image": (filename, jpeg, "image/jpeg")},
                headers=self.headers,
                timeout=self.timeout,
            )
            self._raise_for_status(response, "the classifier")
            return response.json()

    # --- status -----------------------------------------------------------------

    def ready(self) -> bool | None:
        """True ready, False up but not ready, None unreachable."""
        try:
            return httpx.get(f"{self.base_url}/readyz", timeout=3).status_code == 200
        except httpx.HTTPError:
            return None

    def llm_health(self) -> dict[str, Any] | None:
        try:
            response = httpx.get(f"{self.base_url}/v1/llm/health", timeout=4)
            return response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    # --- LLM --------------------------------------------------------------------

    def stream_dish(self, dish: str, task: str, max_tokens: int = 300) -> Iterator[str]:
        return self._stream("/v1/llm/dish", {"dish": dish, "task": task, "max_tokens": max_tokens, "stream": True})

    def stream_prompt(self, prompt: str, max_tokens: int = 300) -> Iterator[str]:
        return self._stream("/v1/llm/generate", {"prompt": prompt, "max_tokens": max_tokens, "stream": True})

    def _stream(self, path: str, body: dict[str, Any]) -> Iterator[str]:
        with errors("the cooking assistant"):
            with httpx.stream(
                "POST", f"{self.base_url}{path}", json=body, headers=self.headers, timeout=self.llm_timeout
            ) as response:
                if response.status_code != 200:
                    response.read()
                    self._raise_for_status(response, "the cooking assistant")
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    record = json.loads(line)
                    if "error" in record:
                        raise BackendError(f"The cooking assistant stopped: {record.get('detail') or record['error']}")
                    if record.get("response"):
                        yield record["response"]

    # --- errors -----------------------------------------------------------------

    def _raise_for_status(self, response: httpx.Response, what: str) -> None:
        if response.status_code < 400:
            return
        try:
            detail = response.json().get("detail") or response.text
        except ValueError:
            detail = response.text or response.reason_phrase
        if response.status_code == 503:
            raise BackendError(f"{what.capitalize()} is unavailable right now: {detail}")
        if response.status_code == 504:
            raise BackendError(f"{what.capitalize()} took too long to answer: {detail}")
        if response.status_code >= 500:
            raise BackendError(f"{what.capitalize()} failed ({response.status_code}). Please try again.")
        raise BackendError(f"The request was refused ({response.status_code}): {detail}")


@contextlib.contextmanager
def errors(what: str):
    """Transport failures -> a BackendError that says what happened, in words."""
    try:
        yield
    except BackendError:
        raise
    except httpx.TimeoutException:
        raise BackendError(f"{what.capitalize()} did not answer in time. Please try again.") from None
    except httpx.HTTPError:
        raise BackendError("The TikkaMasalAI service is not reachable. Is it running? (check the sidebar)") from None
    except (ValueError, KeyError):
        raise BackendError(f"{what.capitalize()} sent an answer this page cannot read.") from None
