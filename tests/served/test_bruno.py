"""The Bruno collection (tests/api/bruno/), run by the pinned Bruno CLI against a served Bento
and the sidecar, as `make test-local-api` runs it: every request and assertion passes, and
every public route of the route table has a request."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests import helpers
from tikka.http.routes import ROUTES

pytestmark = [pytest.mark.slow, pytest.mark.served]
COLLECTION = helpers.ROOT / "tests" / "api" / "bruno"
BRU = helpers.ROOT / "tests" / "api" / "node_modules" / ".bin" / "bru"
# Covered by the collection's flow or left out on purpose: a retry re-runs the task the
# collection just checked, and BentoML's own server answers every cancel with 400.
NOT_REQUESTED = {("post", "/bulk_classify/retry"), ("put", "/bulk_classify/cancel")}


def requests_in_collection() -> set[tuple[str, str]]:
    """(method, route) of every request file, its /v1 prefix and query string removed."""
    found = set()
    for path in COLLECTION.rglob("*.bru"):
        if match := re.search(r"^(get|post|put|delete) \{\n  url: \{\{baseUrl\}\}([^?\n]*)", path.read_text(), re.M):
            found.add((match.group(1), match.group(2).removeprefix("/v1") or "/"))
    return found


def test_the_collection_has_a_request_for_every_public_route():
    requested = requests_in_collection()
    assert set(ROUTES) - NOT_REQUESTED <= requested, set(ROUTES) - NOT_REQUESTED - requested
    # Both forms of the routes the replaced deployment's clients call.
    for route in ("/predict", "/predict/explain", "/health", "/llm/health", "/llm/generate"):
        assert any(url == route for _, url in requested)
        text = "\n".join(p.read_text() for p in COLLECTION.rglob("*.bru"))
        assert f"{{{{baseUrl}}}}/v1{route}\n" in text and f"{{{{baseUrl}}}}{route}\n" in text, route


def test_the_collection_passes_against_a_served_bento(llm_bento, tmp_path):
    assert BRU.exists(), "the Bruno CLI is not installed: `make bruno` (npm ci in tests/api)"
    report = tmp_path / "bruno.json"
    done = subprocess.run(
        [str(BRU), "run", "-r", "--env", "local", "--env-var", f"baseUrl={llm_bento}", "--reporter-json", str(report)],
        cwd=COLLECTION, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    (summary,) = [run["summary"] for run in json.loads(report.read_text())]
    assert (
        summary["totalRequests"]
        == summary["passedRequests"]
        == len(list(COLLECTION.rglob("*.bru")))
        - len([*COLLECTION.rglob("folder.bru"), *COLLECTION.glob("environments/*.bru"), COLLECTION / "collection.bru"])
    )
    assert summary["failedAssertions"] == summary["failedTests"] == 0 and summary["passedAssertions"] > 60
