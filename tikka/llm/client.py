"""The LLM helpers: the official async `ollama` client with explicit timeouts, and prompt templates.

The Bento talks to Ollama only through ``ollama.AsyncClient`` (never blocking a
worker), and cannot tell the real Ollama from the embedded sidecar. Every
failure becomes a typed ServiceError with the status a client should see.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
import ollama
from pydantic import BaseModel, Field

from tikka import metrics
from tikka.errors import (
    InvalidPrompt,
    LLMBusy,
    LLMFailed,
    LLMModelMissing,
    LLMTimeout,
    LLMUnavailable,
    ServiceError,
)
from tikka.settings import Settings

Task = Literal["recipe", "nutrition", "origin"]


# Completion-style: each template ends with the answer already begun, so a base
# (not instruction-tuned) model continues it sensibly, and an instruction-tuned
# one reads it as a clear request. The begun answer is part of the response.
TEMPLATES: dict[str, tuple[str, str]] = {
    "recipe": (
        "Dish: {name}\nTask: a simple home recipe for {name}, with ingredients and steps.\n\n",
        "Here is a simple recipe for {name}.\n\nIngredients:\n-",
    ),
    "nutrition": (
        "Dish: {name}\nTask: the approximate nutrition facts of one serving of {name}.\n\n",
        "Approximate nutrition facts for one serving of {name}:\n\n- Calories:",
    ),
    "origin": (
        "Dish: {name}\nTask: where {name} comes from, and its history.\n\n",
        "The origin of {name}:\n\n{name} comes from",
    ),
}


def humanize_label(label: str) -> str:
    """'huevos_rancheros' -> 'Huevos Rancheros'."""
    return " ".join(word.capitalize() for word in label.replace("-", "_").split("_") if word)


def dish_prompt(dish: str, task: Task) -> tuple[str, str]:
    """(full prompt, the begun answer that the prompt ends with)."""
    instruction, answer_start = TEMPLATES[task]
    name = humanize_label(dish)
    start = answer_start.format(name=name)
    return instruction.format(name=name) + start, start


class GenerateResponse(BaseModel):
    response: str = Field(description="The generated text (for /llm/dish, including the begun answer).")
    model: str = Field(examples=["gemma3:270m"])
    done: bool
    done_reason: str = Field(examples=["stop", "length"])
    eval_count: int = Field(description="Tokens generated.")
    duration_ms: float = Field(description="Wall time of the LLM call, as the gateway measured it.")


class LLMHealth(BaseModel):
    status: Literal["healthy", "unavailable", "model_missing"]
    ollama_url: str
    available_models: list[str]
    configured_model: str


def same_model(a: str, b: str) -> bool:
    """Ollama treats 'gemma3' and 'gemma3:latest' as one name."""

    def canonical(name: str) -> str:
        return name if ":" in name else f"{name}:latest"

    return canonical(a) == canonical(b)


class LLMClient:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.model = settings.ollama_model
        self._slots: asyncio.Semaphore | None = None
        timeout = httpx.Timeout(settings.llm_read_timeout_s, connect=settings.llm_connect_timeout_s)
        self.client = ollama.AsyncClient(host=settings.ollama_host, timeout=timeout)
        # The URL as the client resolved OLLAMA_HOST ("host:port", no scheme, ...):
        # ollama exposes no public accessor, and re-parsing it here could disagree.
        self.url = str(self.client._client.base_url).rstrip("/")

    @contextlib.asynccontextmanager
    async def errors(self):
        """Every way a call to Ollama can fail -> a ServiceError that says what to do."""
        try:
            yield
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise LLMModelMissing(
                    f"the model {self.model!r} is not available on {self.url}: run"
                    f" `ollama pull {self.model}` there (or set TIKKA_OLLAMA_MODEL)"
                ) from None
            if exc.status_code == 400 and "context length" in str(exc.error):
                raise InvalidPrompt(f"the prompt is too long for the model: {exc.error}; shorten it") from None
            raise LLMFailed(f"the LLM answered with an error: {exc.error}") from None
        except httpx.TimeoutException as exc:
            if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
                raise self.unavailable() from None
            raise LLMTimeout(
                f"the LLM at {self.url} sent nothing for {self.settings.llm_read_timeout_s:g} s;"
                " retry with a shorter answer (max_tokens) or later"
            ) from None
        except ValueError:
            # Not Ollama's JSON (invalid JSON, an HTML page with a 200, a record of the wrong
            # shape): json and pydantic errors are both ValueErrors. A 502, never a 500.
            raise LLMFailed(f"the LLM at {self.url} answered something that is not Ollama's API") from None
        except (ConnectionError, httpx.TransportError):
            # ollama raises the built-in ConnectionError for refused connections;
            # httpx errors arrive raw from streams and from a sidecar that died mid-answer.
            raise self.unavailable() from None

    def unavailable(self) -> LLMUnavailable:
        return LLMUnavailable(
            f"the LLM sidecar at {self.url} is not reachable: start it (`make sidecar`, or the"
            " ollama container) or point OLLAMA_HOST at it"
        )

    def options(self, temperature: float, max_tokens: int) -> dict[str, Any]:
        return {"temperature": temperature, "num_predict": max_tokens}

    @contextlib.asynccontextmanager
    async def slot(self):
        """One of ``llm_concurrency`` generation slots, or LLMBusy after ``llm_queue_wait_s``.

        Ollama (and the sidecar) run one generation at a time per model by
        default: a 4096-token answer held the LLM for 44 s while short requests
        queued behind it. Waiting is bounded; past it the client gets a 503 it
        can retry, instead of a request that hangs for minutes.
        """
        if self._slots is None:  # created in the serving event loop
            self._slots = asyncio.Semaphore(self.settings.llm_concurrency)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can time out after the
            # permit was granted and lose it; a cancelled acquire() hands it on.
            async with asyncio.timeout(self.settings.llm_queue_wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise LLMBusy(
                f"the LLM is busy with {self.settings.llm_concurrency} generation(s) and none finished"
                f" within {self.settings.llm_queue_wait_s:g} s; retry shortly"
            ) from None
        try:
            yield
        finally:
            self._slots.release()

    async def generate(self, prompt: str, temperature: float, max_tokens: int) -> ollama.GenerateResponse:
        async with self.slot(), self.errors():
            return await self.client.generate(
                model=self.model, prompt=prompt, options=self.options(temperature, max_tokens), stream=False
            )

    async def stream(self, prompt: str, temperature: float, max_tokens: int) -> AsyncIterator[ollama.GenerateResponse]:
        """Chunks as they come. The first one is awaited here, so that failures before
        any output (busy, sidecar down, model missing) raise now and become a status code.

        The slot is held by a generator that is already running when this returns,
        so that it is released however the stream ends: done, failed, or dropped
        by the client (a running async generator is closed when it is collected).
        """

        async def chunks() -> AsyncIterator[ollama.GenerateResponse]:
            async with self.slot(), self.errors():
                async for chunk in await self.client.generate(
                    model=self.model, prompt=prompt, options=self.options(temperature, max_tokens), stream=True
                ):
                    yield chunk

        running = chunks()
        try:
            first = await anext(running)
        except StopAsyncIteration:
            raise LLMFailed("the LLM stream ended before its first record") from None

        async def rest() -> AsyncIterator[ollama.GenerateResponse]:
            try:
                yield first
                async for chunk in running:
                    yield chunk
            finally:
                await running.aclose()

        return rest()

    async def health(self) -> LLMHealth:
        """Answers within llm_health_timeout_s whatever the sidecar does."""
        try:
            listed = await asyncio.wait_for(self.client.list(), timeout=self.settings.llm_health_timeout_s)
        except Exception:  # refused, hung, garbage: all mean "unavailable" here
            return LLMHealth(
                status="unavailable", ollama_url=self.url, available_models=[], configured_model=self.model
            )
        names = [m.model for m in listed.models if m.model]
        status = "healthy" if any(same_model(n, self.model) for n in names) else "model_missing"
        return LLMHealth(status=status, ollama_url=self.url, available_models=names, configured_model=self.model)


async def complete(
    llm: LLMClient, prompt: str, answer_start: str, temperature: float, max_tokens: int, task: str
) -> GenerateResponse:
    """One non-streaming generation, timed and counted."""
    started = time.perf_counter()
    with failures_observed(task, started):
        result = await llm.generate(prompt, temperature, max_tokens)
    observe(task, "ok", started, result)
    return GenerateResponse(
        response=answer_start + (result.response or ""),
        model=result.model or llm.model,
        done=bool(result.done),
        done_reason=result.done_reason or "stop",
        eval_count=result.eval_count or 0,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )


async def stream_ndjson(
    llm: LLMClient, prompt: str, answer_start: str, temperature: float, max_tokens: int, task: str
) -> AsyncIterator[bytes]:
    """Open a streaming generation (raising a ServiceError if it cannot start), then
    yield NDJSON lines: the tokens, a final statistics line, or an error line."""
    started = time.perf_counter()
    with failures_observed(task, started):
        chunks = await llm.stream(prompt, temperature, max_tokens)

    def line(record: dict[str, Any]) -> bytes:
        return json.dumps(record).encode() + b"\n"

    async def lines() -> AsyncIterator[bytes]:
        if answer_start:
            yield line({"response": answer_start, "done": False})
        try:
            async for chunk in chunks:
                if chunk.response:
                    yield line({"response": chunk.response, "done": False})
                if chunk.done:
                    observe(task, "ok", started, chunk)
                    yield line(
                        {
                            "response": "",
                            "model": chunk.model or llm.model,
                            "done": True,
                            "done_reason": chunk.done_reason or "stop",
                            "eval_count": chunk.eval_count or 0,
                            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                        }
                    )
                    return
            raise LLMFailed("the LLM stream ended without a final record")
        except ServiceError as exc:
            observe(task, exc.error, started)
            yield line({"error": exc.error, "detail": str(exc), "done": True, "done_reason": "error"})

    return lines()


def observe(task: str, outcome: str, started: float, final: ollama.GenerateResponse | None = None) -> None:
    """Time the call; count the tokens of a finished one (its final record)."""
    metrics.LLM_SECONDS.labels(task=task, outcome=outcome).observe(time.perf_counter() - started)
    if final is not None:
        metrics.LLM_TOKENS.labels(task=task, kind="prompt").inc(final.prompt_eval_count or 0)
        metrics.LLM_TOKENS.labels(task=task, kind="completion").inc(final.eval_count or 0)


@contextlib.contextmanager
def failures_observed(task: str, started: float):
    """Count a failed LLM call under its error code, then let the error propagate."""
    try:
        yield
    except ServiceError as exc:
        observe(task, exc.error, started)
        raise
