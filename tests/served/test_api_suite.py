"""The end-to-end API suite: `make test-api BASE_URL=https://api.example.com`.

Read-only and safe against production: it reads health, classifies the sample
photos, asks for one explanation and one short LLM answer, and sends a few bad
inputs that the gateway refuses before any work. Everything goes through /v1.

- TIKKA_BASE_URL: the deployment (the local Compose stack, production, a served Bento).
  Unset (as in `make test`), the suite serves a Bento and the sidecar itself.
- TIKKA_API_KEY: sent as a Bearer token when the deployment wants keys.
- TIKKA_TEST_ORIGIN: an origin the deployment allows (CORS); default http://localhost:8501.
"""

from __future__ import annotations

import base64
import io
import json
import os

import httpx
import pytest
from PIL import Image

from tests import helpers

pytestmark = [pytest.mark.api, pytest.mark.slow]

PHOTOS = helpers.ROOT / "tests" / "data"
# The default model (ImageNet) calls the hamburger a cheeseburger; Food-101 calls it a hamburger.
EXPECTED_TOP_1 = {
    "pizza.jpg": {"pizza"},
    "guacamole.jpg": {"guacamole"},
    "hamburger.jpg": {"hamburger", "cheeseburger"},
}
ORIGIN = os.environ.get("TIKKA_TEST_ORIGIN", "http://localhost:8501")


@pytest.fixture(scope="module")
def base_url(request) -> str:
    if url := os.environ.get("TIKKA_BASE_URL"):
        return url.rstrip("/")
    return request.getfixturevalue("llm_bento")


@pytest.fixture(scope="module")
def api(base_url):
    headers = {"Authorization": f"Bearer {key}"} if (key := os.environ.get("TIKKA_API_KEY")) else {}
    with httpx.Client(base_url=f"{base_url}/v1", headers=headers, timeout=120, limits=helpers.CLIENT_LIMITS) as client:
        yield client


def upload(name: str) -> dict:
    return {"image": (name, (PHOTOS / name).read_bytes(), "image/jpeg")}


def test_health_and_readiness(api, base_url):
    assert api.get("/health").json() == {"status": "ok"}
    assert httpx.get(f"{base_url}/readyz", timeout=10).status_code == 200
    assert httpx.get(f"{base_url}/livez", timeout=10).status_code == 200


@pytest.mark.parametrize("name", sorted(EXPECTED_TOP_1))
def test_classifies_the_sample_photos(api, name):
    response = api.post("/predict", files=upload(name))
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 5 and abs(sum(predictions.values()) - 1) < 0.05
    assert max(predictions, key=predictions.get) in EXPECTED_TOP_1[name]


def test_explains_a_photo(api):
    response = api.post("/predict/explain", files=upload("pizza.jpg"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predicted_class"] == "pizza"
    overlay = Image.open(io.BytesIO(base64.b64decode(body["attention_map"])))
    assert overlay.format == "PNG" and min(overlay.size) > 100


def test_llm_answers_when_healthy(api):
    health = api.get("/llm/health").json()
    if health["status"] != "healthy":
        pytest.skip(f"the LLM is {health['status']} at {health['ollama_url']}: no LLM check")
    answer = api.post("/llm/dish", json={"dish": "pizza", "task": "origin", "max_tokens": 16})
    assert answer.status_code == 200, answer.text
    assert answer.json()["response"].strip() and answer.json()["eval_count"] > 0
    with api.stream("POST", "/llm/generate", json={"prompt": "Pizza is", "max_tokens": 8, "stream": True}) as stream:
        records = [json.loads(line) for line in stream.iter_lines() if line]
    assert stream.headers["content-type"].startswith("application/x-ndjson")
    assert records[-1]["done"] is True and "error" not in records[-1]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "error"),
    [
        ({"files": {"image": ("notes.txt", b"hello", "text/plain")}}, 415, "unsupported_media_type"),
        ({"files": {"image": ("x.jpg", b"not a jpeg", "image/jpeg")}}, 400, "not_an_image"),
        (
            {"files": [("image", ("p.jpg", b"x", "image/jpeg")), ("photo", ("q.jpg", b"y", "image/jpeg"))]},
            400,
            "unexpected_field",
        ),
        ({"files": [("note", (None, "no file here"))]}, 422, "missing_field"),
        ({"json": {"image": "https://example.com/pizza.jpg"}}, 415, "unsupported_media_type"),
    ],
    ids=["text-file", "not-an-image", "wrong-field", "no-file", "json-url"],
)
def test_bad_inputs_get_the_json_error_contract(api, request_kwargs, status, error):
    response = api.post("/predict", **request_kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and body["detail"]


def test_invalid_llm_request_is_a_422(api):
    response = api.post("/llm/dish", json={"dish": "pizza", "task": "poem"})
    assert response.status_code == 422 and response.json()["error"] == "invalid_request"


def test_cors_allows_the_configured_origin_only(api):
    preflight = api.options("/predict", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    refused = api.post("/predict", files={"image": ("t.txt", b"x", "text/plain")}, headers={"Origin": ORIGIN})
    assert refused.status_code == 415 and refused.headers["access-control-allow-origin"] == ORIGIN
    other = api.options("/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers
