"""Access control, against a really served Bento with two API keys (a rotation) and a metrics key."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from frontend.backend import Backend, BackendError
from tests import helpers
from tikka.auth import key_matches, presented_key

pytestmark = [pytest.mark.slow, pytest.mark.served]

ORIGIN = "http://localhost:8501"


@pytest.fixture(scope="module")
def secured(default_model, tmp_path_factory):
    env = {"TIKKA_API_KEYS": json.dumps(["old-key", "new-key"]), "TIKKA_METRICS_KEYS": json.dumps(["prom-key"])}
    with helpers.served_bento(tmp_path_factory.mktemp("secured"), env) as url:
        yield url


def upload(url: str, photo: bytes, route: str = "/predict", **headers) -> httpx.Response:
    return httpx.post(f"{url}{route}", files={"image": ("p.jpg", photo, "image/jpeg")}, headers=headers, timeout=60)


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode()


def test_keys_are_read_from_every_accepted_header():
    from starlette.datastructures import Headers

    assert presented_key(Headers({"x-api-key": "k"})) == "k"
    assert presented_key(Headers({"authorization": "Bearer k"})) == "k"
    assert presented_key(Headers({"authorization": basic("k")})) == "k"
    assert presented_key(Headers({"authorization": "Basic !!notbase64"})) is None
    assert presented_key(Headers({})) is None
    assert key_matches("b", ["a", "b"]) and not key_matches("c", ["a", "b"]) and not key_matches(None, ["a"])


def test_prediction_and_llm_routes_need_one_of_the_keys(secured, photo):
    data = photo("pizza.jpg")
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer prom-key"}):
        response = upload(secured, data, **headers)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized" and "API key" in response.json()["detail"]
        assert response.headers["www-authenticate"].startswith("Bearer")
    llm = httpx.post(f"{secured}/llm/generate", json={"prompt": "hi"}, timeout=30)
    assert llm.status_code == 401
    # Both keys of a rotation work, in either header.
    assert upload(secured, data, Authorization="Bearer old-key").status_code == 200
    assert upload(secured, data, route="/predict/explain", **{"X-API-Key": "new-key"}).status_code == 200


def test_probes_and_preflights_need_no_key_and_errors_keep_cors(secured, photo):
    for path in ("/livez", "/readyz", "/health", "/llm/health"):
        assert httpx.get(f"{secured}{path}", timeout=10).status_code == 200, path
    preflight = httpx.options(f"{secured}/predict", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ORIGIN
    refused = upload(secured, photo("pizza.jpg"), Origin=ORIGIN)
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN


def test_metrics_and_dashboard_have_their_own_key(secured):
    for path in ("/metrics", "/dashboard"):
        assert httpx.get(f"{secured}{path}").status_code == 401
        refused = httpx.get(f"{secured}{path}", headers={"Authorization": "Bearer old-key"})
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
        assert httpx.get(f"{secured}{path}", headers={"Authorization": "Bearer prom-key"}).status_code == 200
        assert httpx.get(f"{secured}{path}", headers={"Authorization": basic("prom-key")}).status_code == 200


def test_the_front_end_sends_its_key(secured, photo):
    data = photo("pizza.jpg")
    assert next(iter(Backend(secured, api_key="new-key").predict("p.jpg", data)["predictions"])) == "pizza"
    with pytest.raises(BackendError):
        Backend(secured).predict("p.jpg", data)
