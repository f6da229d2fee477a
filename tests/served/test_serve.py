"""`make serve` (`tikka serve`): the LLM sidecar, the Bento and the Streamlit app start together,
one line gives their URLs once all three answer, and an interrupt stops all three."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests import helpers

pytestmark = [pytest.mark.slow, pytest.mark.served]


def test_serve_starts_all_three_announces_them_and_stops_them(default_model, tmp_path):
    home = tmp_path / "bentoml"  # its own: each `bentoml serve` resets its home's metrics directory
    home.mkdir()
    (home / "models").symlink_to(Path(os.environ["BENTOML_HOME"]) / "models", target_is_directory=True)
    port, sidecar_port, ui_port = free_ports(3)
    command = [
        str(Path(sys.executable).parent / "tikka"),
        "serve",
        "--port",
        str(port),
        "--sidecar-port",
        str(sidecar_port),
        "--sidecar-threads",
        "1",
        "--ui-port",
        str(ui_port),
    ]
    process = subprocess.Popen(
        command,
        env={**os.environ, "BENTOML_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        banner = wait_for_banner(process, timeout_s=300)
        api, ui = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
        for url in (api, f"{api}/docs", ui, f"{api}/dashboard"):
            assert url in banner, banner
        assert httpx.get(f"{api}/readyz").status_code == 200
        assert httpx.get(f"{ui}/_stcore/health").text == "ok"
        llm = httpx.get(f"{api}/llm/health", timeout=10).json()
        assert llm["status"] == "healthy", llm  # the Bento reaches the sidecar it was started with
        photo = (helpers.ROOT / "tests" / "data" / "pizza.jpg").read_bytes()
        predicted = httpx.post(f"{api}/predict", files={"image": ("pizza.jpg", photo)}, timeout=60)
        assert next(iter(predicted.json()["predictions"])) == "pizza"
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= 3

        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
        assert process.wait(timeout=60) == 0
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{api}/livez", timeout=2)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def free_ports(count: int) -> list[int]:
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def wait_for_banner(process: subprocess.Popen, timeout_s: float) -> str:
    """The line `tikka serve` prints once all three are ready (the output before it, on failure)."""
    deadline, seen = time.monotonic() + timeout_s, []
    os.set_blocking(process.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line:
            seen.append(line)
            if line.startswith("TikkaMasalAI is ready"):
                return line
        elif process.poll() is not None:
            break
        else:
            time.sleep(0.2)
    raise AssertionError(f"no banner (exit {process.poll()}):\n{''.join(seen[-60:])}")
