"""The front end's HTTP client against the real Bento, a closed port and a hung server."""

from __future__ import annotations

import pytest

from frontend.backend import Backend, BackendError
from tests import helpers

pytestmark = pytest.mark.slow


def test_a_4xx_carries_the_services_detail(llm_bento):
    with pytest.raises(BackendError) as excinfo:
        Backend(llm_bento).predict("x.jpg", b"garbage bytes")
    assert "refused (400)" in str(excinfo.value) and "not a readable image" in str(excinfo.value)


def test_a_closed_port_is_not_reachable():
    with helpers.closed_port() as port:
        backend = Backend(f"http://127.0.0.1:{port}")
        with pytest.raises(BackendError, match="not reachable"):
            backend.predict("x.jpg", b"x")
        assert backend.ready() is None and backend.llm_health() is None


def test_a_hung_server_times_out():
    with helpers.HungServer() as hung:
        backend = Backend(f"http://127.0.0.1:{hung.port}", timeout=1, llm_timeout=1)
        with pytest.raises(BackendError, match="did not answer in time"):
            backend.predict("x.jpg", b"x")
        with pytest.raises(BackendError, match="did not answer in time"):
            list(backend.stream_dish("pizza", "recipe"))
