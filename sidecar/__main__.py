"""`python -m sidecar [--port N] [--threads N]`: the Ollama-compatible sidecar on its own port."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from sidecar.server import create_app
from sidecar.settings import SidecarSettings


def main() -> None:
    defaults = SidecarSettings()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--context-size", type=int, default=defaults.context_size)
    parser.add_argument("--model-name", default=defaults.model_name)
    args = parser.parse_args()
    settings = defaults.model_copy(
        update={
            "host": args.host,
            "port": args.port,
            "threads": args.threads,
            "context_size": args.context_size,
            "model_name": args.model_name,
        }
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [sidecar] %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
