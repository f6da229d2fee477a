"""`tikka serve` (`make serve`): the LLM sidecar, the Bento and the Streamlit app, as three
processes that start together, are announced once all three answer, and stop together.

By hand rather than with a process manager (honcho, supervisord): three processes and their
readiness URLs are all there is, and the project's first command must need nothing more.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

POLL_S = 0.5


@dataclass(frozen=True)
class Process:
    name: str
    command: list[str]
    ready_url: str  # answers 200 once the process serves
    env: dict[str, str]
    cwd: Path | None = None


def plan(
    root: Path, port: int, sidecar_port: int, sidecar_threads: int, ui_port: int, host: str = "127.0.0.1"
) -> list[Process]:
    python, bin_dir = sys.executable, Path(sys.executable).parent
    api = f"http://{host}:{port}"
    env = {"OLLAMA_HOST": f"http://{host}:{sidecar_port}"}
    return [
        Process(
            "LLM sidecar",
            [python, "-m", "sidecar", "--host", host, "--port", str(sidecar_port), "--threads", str(sidecar_threads)],
            f"http://{host}:{sidecar_port}/api/version",
            env,
            root,
        ),
        Process(
            "Bento",
            [str(bin_dir / "bentoml"), "serve", "service:Gateway", "--host", host, "--port", str(port)],
            f"{api}/readyz",
            env,
            root,
        ),
        # From frontend/, so that frontend/.streamlit/config.toml applies.
        Process(
            "UI",
            [str(bin_dir / "streamlit"), "run", "app.py", "--server.port", str(ui_port), "--server.address", host],
            f"http://{host}:{ui_port}/_stcore/health",
            {"TIKKA_API_URL": api},
            root / "frontend",
        ),
    ]


def is_ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def run(processes: list[Process], banner: str, start_timeout_s: float) -> int:
    """Start every process, print ``banner`` once all are ready, then wait. Ctrl-C (or
    SIGTERM) stops all of them; so does any one of them exiting, with its exit code."""
    started: list[tuple[Process, subprocess.Popen]] = []
    signal.signal(signal.SIGTERM, interrupt)
    try:
        for process in processes:
            started.append(
                (process, subprocess.Popen(process.command, cwd=process.cwd, env={**os.environ, **process.env}))
            )
        waiting, deadline = list(processes), time.monotonic() + start_timeout_s
        while waiting:
            if failed := exited(started):
                return failed
            waiting = [process for process in waiting if not is_ready(process.ready_url)]
            if waiting and time.monotonic() > deadline:
                print(
                    f"not ready after {start_timeout_s:.0f} s: {', '.join(p.name for p in waiting)}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            time.sleep(POLL_S)
        print(banner, flush=True)
        while not (failed := exited(started)):
            time.sleep(POLL_S)
        return failed
    except KeyboardInterrupt:
        return 0
    finally:
        stop(started)


def interrupt(*_) -> None:
    raise KeyboardInterrupt


def exited(started: list[tuple[Process, subprocess.Popen]]) -> int:
    """The exit code of the first process that has stopped (at least 1), else 0."""
    for process, popen in started:
        if (code := popen.poll()) is not None:
            print(f"{process.name} exited with code {code}; stopping the others", file=sys.stderr, flush=True)
            return code or 1
    return 0


def stop(started: list[tuple[Process, subprocess.Popen]], grace_s: float = 15) -> None:
    for _, popen in started:
        if popen.poll() is None:
            popen.terminate()
    deadline = time.monotonic() + grace_s
    for _, popen in started:
        try:
            popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            popen.kill()
