"""Access control, with two API keys (a rotation) and a metrics key: the Gateway in-process,
configured for it (tests/helpers.py, configured_gateway); no process of its own."""

from __future__ import annotations

import base64
import http.server
import json
import threading

import httpx
import pytest

from frontend.backend import Backend, BackendError
from tests import helpers, records
from tikka.http.auth import key_matches, presented_key

pytestmark = pytest.mark.slow

ORIGIN = "http://localhost:8501"
# What each test tried and saw, for docs/RELIABILITY.md (written when the session ends).
ACCESS: list[dict] = []
records.record_at_session_end(
    "access",
    "tests/reliability/test_auth.py",
    lambda: ACCESS and (ACCESS, {"keys": "TIKKA_API_KEYS=[old-key, new-key], TIKKA_METRICS_KEYS=[prom-key]"}),
)


def seen(case: str, tried: int, expected: str, observed) -> None:
    ACCESS.append({"case": case, "tried": tried, "expected": expected, "observed": observed})


@pytest.fixture(scope="module")
def secured(default_model):
    env = {"TIKKA_API_KEYS": json.dumps(["old-key", "new-key"]), "TIKKA_METRICS_KEYS": json.dumps(["prom-key"])}
    with helpers.configured_gateway(**env) as client:
        yield client


def upload(client, photo: bytes, route: str = "/predict", **headers) -> httpx.Response:
    return client.post(route, files={"image": ("p.jpg", photo, "image/jpeg")}, headers=headers)


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
    refused = []
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer prom-key"}):
        response = upload(secured, data, **headers)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized" and "API key" in response.json()["detail"]
        assert response.headers["www-authenticate"].startswith("Bearer")
        refused.append(response.status_code)
    llm = secured.post("/llm/generate", json={"prompt": "hi"})
    assert llm.status_code == 401
    # Both keys of a rotation work, in either header.
    accepted = [
        upload(secured, data, Authorization="Bearer old-key").status_code,
        upload(secured, data, route="/predict/explain", **{"X-API-Key": "new-key"}).status_code,
    ]
    assert accepted == [200, 200]
    seen(
        "no key, a wrong key, the metrics key on /predict; no key on /llm/generate",
        4,
        "401 unauthorized + WWW-Authenticate",
        [*refused, llm.status_code],
    )
    seen("either key of a rotation, in either header", 2, "200", accepted)


def test_probes_and_preflights_need_no_key_and_errors_keep_cors(secured, photo):
    probes = [secured.get(path).status_code for path in ("/livez", "/readyz", "/health", "/llm/health")]
    assert probes == [200] * 4
    preflight = secured.options(
        "/predict",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key",
        },
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ORIGIN
    refused = upload(secured, photo("pizza.jpg"), Origin=ORIGIN)
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
    seen("probes without a key", 4, "200", probes)
    seen("CORS preflight from an allowed origin", 1, "200 + Access-Control-Allow-Origin", preflight.status_code)
    seen(
        "a 401 to an allowed origin",
        1,
        "carries Access-Control-Allow-Origin",
        refused.headers["access-control-allow-origin"],
    )


def test_cors_refuses_other_origins_with_a_json_400_and_no_cors_headers(secured):
    evil = "https://evil.example"
    preflight = secured.options("/predict", headers={"Origin": evil, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 400 and "access-control-allow-origin" not in preflight.headers
    assert preflight.json()["error"] == "bad_request" and "origin" in preflight.json()["detail"].lower()
    refused = secured.post("/predict", json={}, headers={"Origin": evil, "X-API-Key": "old-key"})
    assert refused.status_code == 415 and "access-control-allow-origin" not in refused.headers
    seen("CORS preflight from another origin", 1, "400 JSON, no CORS headers", preflight.status_code)
    seen("an error answer to another origin", 1, "no CORS headers", "none")


@pytest.mark.parametrize("where", ["loopback", "sidecar", "metadata"])
def test_a_url_in_the_file_field_is_never_fetched(secured, where):
    """A recorder listens where a fetch would go (a loopback service, the sidecar's API);
    the cloud metadata address cannot be listened on here, so for it the answer (an
    immediate 400) is what shows nothing was fetched."""
    hits: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(helpers.encode(helpers.photo_image(), "JPEG"))

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = {
        "loopback": f"http://127.0.0.1:{server.server_port}/pizza.jpg",
        "sidecar": f"http://localhost:{server.server_port}/api/tags",
        "metadata": "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    }[where]
    key = {"X-API-Key": "old-key"}
    try:
        as_text = secured.post("/predict", files={"image": (None, target)}, headers=key)
        as_json = secured.post("/predict", json={"image": target}, headers=key)
        as_name = secured.post("/predict", files={"image": (target, b"", "image/jpeg")}, headers=key, timeout=30)
    finally:
        server.shutdown()
    assert (as_text.status_code, as_text.json()["error"]) == (400, "not_a_file")
    assert (as_json.status_code, as_json.json()["error"]) == (415, "unsupported_media_type")
    assert (as_name.status_code, as_name.json()["error"]) == (400, "empty_upload")
    assert hits == []
    seen(
        f"a URL at the {where} address: as the file field's text, as JSON, as a file name",
        3,
        "400 / 415 / 400, nothing fetched",
        f"{as_text.status_code} / {as_json.status_code} / {as_name.status_code}, {len(hits)} fetches",
    )


def test_metrics_and_dashboard_have_their_own_key(secured):
    statuses = []
    for path in ("/metrics", "/dashboard"):
        bare = secured.get(path)
        refused = secured.get(path, headers={"Authorization": "Bearer old-key"})
        assert refused.headers["www-authenticate"].startswith("Basic")
        bearer = secured.get(path, headers={"Authorization": "Bearer prom-key"})
        basic_auth = secured.get(path, headers={"Authorization": basic("prom-key")})
        statuses += [r.status_code for r in (bare, refused, bearer, basic_auth)]
    assert statuses == [401, 401, 200, 200] * 2
    seen(
        "/metrics and /dashboard: no key, an API key, the metrics key as Bearer and as Basic",
        8,
        "401, 401, 200, 200 each",
        statuses,
    )


def test_the_front_end_sends_its_key(photo):
    """The Streamlit app's client against a recorder standing in for the gateway: the key it
    sends is what the tests above show the gateway accepts."""
    seen_keys: list[str | None] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            seen_keys.append(self.headers.get("X-API-Key"))
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"predictions": {"pizza": 1.0}, "filename": "p.jpg", "model": "m"}).encode()
            self.send_response(200 if seen_keys[-1] == "new-key" else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        data = photo("pizza.jpg")
        assert next(iter(Backend(url, api_key="new-key").predict("p.jpg", data)["predictions"])) == "pizza"
        with pytest.raises(BackendError):
            Backend(url).predict("p.jpg", data)
    finally:
        server.shutdown()
    assert seen_keys == ["new-key", None]
