"""Shared fixtures: the model store, in-process and really served Bentos."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Before anything imports bentoml or prometheus_client: the project-local store
# (what `make test` fills) and an empty multiprocess metrics dir, without which
# /metrics hangs in-process.
os.environ.setdefault("BENTOML_HOME", str(ROOT / ".bentoml"))
os.environ.setdefault("BENTOML_CONFIG", str(ROOT / "configuration.yaml"))
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tikka-prom-")
# google-auth looks for Compute Engine's metadata server when it finds no credentials (a
# bulk_classify gs:// source in a test without the emulator): never from a test machine.
os.environ.setdefault("NO_GCE_CHECK", "true")
sys.path.insert(0, str(ROOT))

import subprocess  # noqa: E402

import pytest  # noqa: E402

from tests import records  # noqa: E402
from tests.helpers import SERVED_STARTS, SidecarProcess, served_bento  # noqa: E402

DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def default_model():
    """The embedded default model, imported into the store if it is not there yet."""
    subprocess.run([sys.executable, str(ROOT / "models" / "import_default_model.py")], check=True, env=os.environ)
    import bentoml

    return bentoml.models.get("food-classifier:latest")


@pytest.fixture(scope="session")
def photo():
    def read(name: str) -> bytes:
        return (DATA / name).read_bytes()

    return read


@pytest.fixture(scope="session")
def client(default_model):
    """The Gateway in-process (no batching: the dependency is a local instance)."""
    from starlette.testclient import TestClient

    from service import Gateway
    from tests.helpers import forget_bentoml_metrics

    forget_bentoml_metrics()
    # `bentoml serve` creates BentoML's task store (bulk_classify's) at start; to_asgi() does not.
    from _bentoml_impl.tasks.result import Sqlite3Store
    from bentoml._internal.configuration.containers import BentoMLContainer

    Sqlite3Store.init_db(BentoMLContainer.result_store_file.get())
    with TestClient(Gateway.to_asgi()) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def bento(default_model, tmp_path_factory):
    """A really served Bento (`bentoml serve` subprocess) with small, testable limits."""
    env = {
        "TIKKA_MAX_UPLOAD_BYTES": str(2_000_000),
        "TIKKA_MAX_IMAGE_PIXELS": str(4_000_000),
        "TIKKA_BODY_IDLE_TIMEOUT_S": "2",
    }
    with served_bento(tmp_path_factory.mktemp("bento-home"), env) as url:
        yield url


@pytest.fixture(scope="session")
def sidecar():
    """The real embedded LLM sidecar (llama.cpp + Gemma 3 270M), 1 thread."""
    process = SidecarProcess().start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def llm_bento(sidecar, default_model, tmp_path_factory):
    """A served Bento wired to the sidecar: the whole backend, as the front end sees it."""
    env = {"OLLAMA_HOST": sidecar.url, "TIKKA_LLM_MAX_PROMPT_CHARS": "2000"}
    with served_bento(tmp_path_factory.mktemp("llm-bento"), env) as url:
        yield url


def pytest_sessionfinish(session, exitstatus):
    """The reliability records that several tests gather together (tests/records.py)."""
    records.write_session_records()


def pytest_terminal_summary(terminalreporter):
    """How many Bentos the run served for real: each is a process start of some seconds."""
    if SERVED_STARTS:
        terminalreporter.write_line(f"served Bentos started: {len(SERVED_STARTS)}")
