"""llama.cpp behind one lock, run off the event loop, streaming tokens back to it."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Ollama option name -> llama-cpp-python keyword.
OPTION_NAMES = {
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "seed": "seed",
    "stop": "stop",
    "repeat_penalty": "repeat_penalty",
}


@dataclass
class Generation:
    """What one request produced, with Ollama's statistics (nanoseconds)."""

    prompt_tokens: int = 0
    eval_count: int = 0
    done_reason: str = "stop"
    started_ns: int = field(default_factory=time.monotonic_ns)
    first_token_ns: int | None = None
    finished_ns: int | None = None

    def stats(self, load_duration_ns: int) -> dict[str, Any]:
        finished = self.finished_ns or time.monotonic_ns()
        first = self.first_token_ns or finished
        return {
            "done_reason": self.done_reason,
            "total_duration": finished - self.started_ns,
            "load_duration": load_duration_ns,
            "prompt_eval_count": self.prompt_tokens,
            "prompt_eval_duration": first - self.started_ns,
            "eval_count": self.eval_count,
            "eval_duration": finished - first,
        }


class StreamError(Exception):
    """Generation failed after it started."""


class LlamaEngine:
    def __init__(self, model_path: Path, threads: int, context_size: int):
        from llama_cpp import Llama

        started = time.monotonic_ns()
        # The GGUF carries no chat template: without chat_format llama.cpp falls
        # back to a llama-2 template and Gemma answers with empty text.
        self.llm = Llama(
            model_path=str(model_path),
            chat_format="gemma",
            n_threads=threads,
            n_ctx=context_size,
            verbose=False,
        )
        self.load_duration_ns = time.monotonic_ns() - started
        self.model_path = model_path
        self.size = model_path.stat().st_size
        self.context_size = context_size
        # The llama context is not re-entrant: one generation at a time.
        self._lock = threading.Lock()
        self._digest: str | None = None

    @property
    def digest(self) -> str:
        if self._digest is None:
            sha = hashlib.sha256()
            with self.model_path.open("rb") as fh:
                while chunk := fh.read(1 << 22):
                    sha.update(chunk)
            self._digest = sha.hexdigest()
        return self._digest

    def metadata(self) -> dict[str, str]:
        return dict(self.llm.metadata)

    def prompt_tokens(self, prompt: str) -> int:
        return len(self.llm.tokenize(prompt.encode(), add_bos=True))

    def completion_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        kwargs = {OPTION_NAMES[k]: v for k, v in options.items() if k in OPTION_NAMES and v is not None}
        num_predict = options.get("num_predict")
        # Ollama's -1 means "until done"; llama.cpp's None means the same, bounded by the context.
        kwargs["max_tokens"] = None if num_predict in (None, -1) else int(num_predict)
        if kwargs["max_tokens"] is None:
            kwargs["max_tokens"] = self.context_size
        if isinstance(kwargs.get("stop"), str):
            kwargs["stop"] = [kwargs["stop"]]
        return kwargs

    def _completion_tokens(self, prompt: str, options: dict[str, Any], generation: Generation) -> Iterator[str]:
        generation.prompt_tokens = self.prompt_tokens(prompt)
        for chunk in self.llm.create_completion(prompt, stream=True, **self.completion_kwargs(options)):
            choice = chunk["choices"][0]
            if choice.get("finish_reason"):
                generation.done_reason = choice["finish_reason"]
            if choice.get("text"):
                yield choice["text"]

    def _chat_tokens(
        self, messages: list[dict[str, Any]], options: dict[str, Any], generation: Generation
    ) -> Iterator[str]:
        stream = self.llm.create_chat_completion(messages=messages, stream=True, **self.completion_kwargs(options))
        for chunk in stream:
            choice = chunk["choices"][0]
            if choice.get("finish_reason"):
                generation.done_reason = choice["finish_reason"]
            content = (choice.get("delta") or {}).get("content")
            if content:
                yield content
        generation.prompt_tokens = self.llm.n_tokens - generation.eval_count

    async def stream(self, tokens: Callable[[Generation], Iterator[str]], generation: Generation) -> AsyncIterator[str]:
        """Run ``tokens`` in a worker thread under the lock; yield its pieces on the event loop.

        Closing the iterator (a client that went away) stops the generation at
        the next token, so the lock is not held for an answer nobody reads.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = threading.Event()

        def work() -> None:
            try:
                with self._lock:
                    generation.started_ns = time.monotonic_ns()
                    for piece in tokens(generation):
                        if cancelled.is_set():
                            break
                        if generation.first_token_ns is None:
                            generation.first_token_ns = time.monotonic_ns()
                        generation.eval_count += 1
                        loop.call_soon_threadsafe(queue.put_nowait, ("token", piece))
                    generation.finished_ns = time.monotonic_ns()
                loop.call_soon_threadsafe(queue.put_nowait, ("done", None))
            except Exception as exc:  # reported to the client as an error record
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))

        worker = loop.run_in_executor(None, work)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "token":
                    yield value
                elif kind == "error":
                    raise StreamError(str(value) or type(value).__name__)
                else:
                    break
        finally:
            cancelled.set()
            await asyncio.shield(worker)

    def completion(self, prompt: str, options: dict[str, Any], generation: Generation) -> AsyncIterator[str]:
        return self.stream(lambda g: self._completion_tokens(prompt, options, g), generation)

    def chat(
        self, messages: list[dict[str, Any]], options: dict[str, Any], generation: Generation
    ) -> AsyncIterator[str]:
        return self.stream(lambda g: self._chat_tokens(messages, options, g), generation)
