"""tikka/bentoml_patches.py refuses a BentoML it was not written for (the workarounds patch
private internals; their own tests are named in the module)."""

from __future__ import annotations

import subprocess
import sys

import bentoml
import pytest

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


def test_a_replaced_session_is_closed_after_its_calls():
    """Workaround 6, on BentoML's own SessionManager: renewed after max_age, the old pool is
    closed only after the client's timeout (the longest a call on it may still take)."""
    import asyncio

    from _bentoml_impl.client.proxy2 import SessionManager

    bentoml_patches.retire_dependency_sessions_gently()

    async def scenario():
        manager = SessionManager("http://127.0.0.1:9", timeout=0.3, headers={}, max_age=0.05)
        first = await manager.get_session()
        await asyncio.sleep(0.1)
        second = await manager.get_session()
        renewed_and_still_open = second is not first and not first.closed
        await asyncio.sleep(0.5)
        closed_later = first.closed and not second.closed
        await manager.close()
        return renewed_and_still_open, closed_later

    assert asyncio.run(scenario()) == (True, True)


def test_a_classifier_over_tcp_gets_a_connection_per_call_and_a_unix_socket_keeps_its_own():
    """Workaround 7, on BentoML's own SessionManager: kube-proxy balances connections."""
    import asyncio

    from _bentoml_impl.client.proxy2 import SessionManager

    bentoml_patches.connect_per_call_over_tcp()

    async def connectors():
        found = {}
        for url in ("http://tikka-classifier:3000", "tcp://10.0.0.7:3000", "file:///tmp/classifier.sock"):
            manager = SessionManager(url, timeout=1, headers={"authorization": "Bearer x"})
            session = await manager.get_session()
            found[url] = (session.connector.force_close, str(session._base_url), session.headers["authorization"])
            await manager.close()
        return found

    assert asyncio.run(connectors()) == {
        "http://tikka-classifier:3000": (True, "http://tikka-classifier:3000", "Bearer x"),
        "tcp://10.0.0.7:3000": (True, "http://10.0.0.7:3000", "Bearer x"),
        "file:///tmp/classifier.sock": (False, "http://127.0.0.1:3000", "Bearer x"),
    }


def test_a_classifier_call_is_sent_once_more_after_a_connection_error():
    import asyncio

    import aiohttp

    from tikka.errors import ClassifierUnavailable
    from tikka.services import call_classifier

    def flaky(failures: int):
        attempts = []

        async def call():
            attempts.append(1)
            if len(attempts) <= failures:
                raise aiohttp.ServerDisconnectedError()
            return "probabilities"

        return call, attempts

    call, attempts = flaky(1)
    assert asyncio.run(call_classifier(call, 60)) == "probabilities" and len(attempts) == 2
    call, attempts = flaky(2)
    with pytest.raises(ClassifierUnavailable):
        asyncio.run(call_classifier(call, 60))
    assert len(attempts) == 2, "once more, not in a loop"
