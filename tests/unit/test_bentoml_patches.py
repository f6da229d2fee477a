"""tikka/bentoml_patches.py refuses a BentoML it was not written for (the workarounds patch
private internals; their own tests are named in the module)."""

from __future__ import annotations

import subprocess
import sys

import bentoml

from tests import helpers
from tikka import bentoml_patches


def import_with_version(version: str) -> subprocess.CompletedProcess:
    code = f"import bentoml; bentoml.__version__ = {version!r}; import tikka.bentoml_patches"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=helpers.ROOT, timeout=120)


def test_the_pinned_bentoml_is_the_one_the_workarounds_were_written_for():
    assert bentoml.__version__ == bentoml_patches.WRITTEN_FOR
    assert import_with_version(bentoml_patches.WRITTEN_FOR).returncode == 0


def test_another_bentoml_version_fails_loudly_at_import():
    result = import_with_version("1.5.0")
    assert result.returncode != 0
    assert "RuntimeError" in result.stderr and "1.5.0" in result.stderr and bentoml_patches.WRITTEN_FOR in result.stderr


def test_bentomls_request_timeout_answers_in_the_error_shape():
    """BentoML's own TimeoutMiddleware, around an app that never answers, once services.py
    has applied workaround 5 (importing it applies them all)."""
    import asyncio

    import httpx
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    import tikka.services  # noqa: F401

    async def never_answers(scope, receive, send):
        await asyncio.sleep(30)

    async def call():
        transport = httpx.ASGITransport(app=TimeoutMiddleware(never_answers, timeout=0.2))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.get("/predict")

    response = asyncio.run(call())
    assert response.status_code == 504
    assert response.json() == {"error": "service_timeout", "detail": "Not able to process the request in 0.2 seconds"}
