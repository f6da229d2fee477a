"""In-process tests of the HTTP contract (Gateway.to_asgi(); no batching in-process)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from tests import helpers
from tikka.model.runtime import graph_candidates
from tikka.settings import get_settings

settings = get_settings()


def post_image(client, data: bytes, name="photo.jpg", content_type="image/jpeg", route="/predict"):
    return client.post(route, files={"image": (name, data, content_type)})


def assert_prediction(response, top: str | None = None, filename: str | None = None):
    assert response.status_code == 200, response.text
    body = response.json()
    predictions = body["predictions"]
    assert len(predictions) == 5
    values = list(predictions.values())
    assert values == sorted(values, reverse=True)
    assert all(round(v, 3) == v and 0 <= v <= 1 for v in values)
    assert body["model"].startswith("food-classifier:") and not body["model"].endswith(":latest")
    if top:
        assert next(iter(predictions)) == top
    if filename:
        assert body["filename"] == filename
    return body


def test_predict_returns_top5_for_a_photo(client, photo):
    assert_prediction(post_image(client, photo("pizza.jpg"), "pizza.jpg"), top="pizza", filename="pizza.jpg")


@pytest.mark.parametrize(
    ("kind", "make", "content_type"),
    [
        ("png-alpha", lambda: helpers.rgba_png(helpers.photo_image()), "image/png"),
        ("webp", lambda: helpers.encode(helpers.photo_image(), "WEBP"), "image/webp"),
        ("gif", lambda: helpers.encode(helpers.photo_image().convert("P"), "GIF"), "image/gif"),
        ("cmyk-jpeg", lambda: helpers.encode(helpers.photo_image().convert("CMYK"), "JPEG"), "image/jpeg"),
        ("grayscale", lambda: helpers.encode(helpers.photo_image().convert("L"), "PNG"), "image/png"),
        ("sixteen-bit", lambda: helpers.sixteen_bit_png(), "image/png"),
        ("exif-rotated", lambda: helpers.exif_rotated_jpeg(helpers.photo_image()), "image/jpeg"),
        ("heic-iphone", lambda: helpers.phone_photo("HEIF"), "image/heic"),
        ("avif-android", lambda: helpers.phone_photo("AVIF"), "image/avif"),
        ("octet-stream", lambda: helpers.encode(helpers.photo_image(), "JPEG"), "application/octet-stream"),
    ],
)
def test_every_accepted_kind_of_image_is_classified(client, kind, make, content_type):
    body = assert_prediction(post_image(client, make(), f"{kind}.img", content_type))
    if kind not in ("sixteen-bit", "grayscale"):
        assert next(iter(body["predictions"])) == "pizza"


def test_bad_inputs_get_their_status_and_a_json_detail(client, photo):
    cases = helpers.bad_uploads(settings.max_upload_bytes, settings.max_image_pixels, photo("pizza.jpg"))
    for case_id, request, status, error in cases:
        response = client.post("/predict", **request)
        assert response.status_code == status, (case_id, response.text)
        body = response.json()
        assert isinstance(body["detail"], str) and body["detail"], case_id
        assert body["error"] == error, case_id
        if case_id == "missing-field":
            assert "'image'" in body["detail"]
    # nothing was broken by all that
    assert_prediction(post_image(client, photo("guacamole.jpg")), top="guacamole")


def test_explain_returns_a_heatmap_png_of_the_upload_proportions(client, photo):
    response = post_image(client, photo("guacamole.jpg"), "guacamole.jpg", route="/predict/explain")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predicted_class"] == "guacamole" and body["confidence"] > 0.9
    assert body["method"] == "grad-cam" and body["grid_size"] == "7x7"
    assert body["num_layers"] == 1 and body["num_heads"] == 0 and body["filename"] == "guacamole.jpg"
    for field in ("attention_map", "heatmap"):
        png = Image.open(io.BytesIO(base64.b64decode(body[field])))
        assert png.format == "PNG" and png.size == (427, 640)


@pytest.mark.parametrize("route", ["/predict", "/predict/explain"])
def test_unknown_text_fields_are_ignored(client, photo, route):
    """The replaced deployment's Streamlit app sends `label` beside the photo on explain."""
    response = client.post(
        route, files={"image": ("pizza.jpg", photo("pizza.jpg"), "image/jpeg")}, data={"label": "pizza", "note": "x"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["filename"] == "pizza.jpg"


@pytest.mark.parametrize("route", ["/llm/generate", "/llm/dish"])
@pytest.mark.parametrize(
    "content_type", ["multipart/form-data", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"]
)
def test_a_form_sent_to_a_json_route_is_a_415(client, route, content_type):
    """BentoML parsed it as a form and answered 500."""
    response = client.post(route, content=b"prompt=hi", headers={"Content-Type": content_type})
    assert response.status_code == 415, response.text
    assert response.json()["error"] == "unsupported_media_type" and "application/json" in response.json()["detail"]


@pytest.mark.parametrize("chunked", [False, True])
def test_json_bodies_over_the_limit_are_a_413(client, chunked):
    """A 100 MB JSON body used to be read whole."""
    body = b'{"prompt": "' + b"x" * (settings.max_json_bytes + 10) + b'"}'
    content = iter([body[:1000], body[1000:]]) if chunked else body  # an iterator: no Content-Length
    response = client.post("/llm/generate", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "request_too_large"
    assert str(settings.max_json_bytes) in response.json()["detail"]


def test_docs_page_serves_swagger_ui_from_local_assets(client):
    """The docs and `/` point to /docs; it answered 404."""
    page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/openapi.json" in page.text and "googletagmanager" not in page.text
    for asset in ("/static_content/swagger-ui-bundle.js", "/static_content/swagger-ui.css"):
        assert asset in page.text and client.get(asset).status_code == 200, asset


def test_explain_rejects_bad_input_like_predict(client):
    response = post_image(client, b"not an image", route="/predict/explain")
    assert response.status_code == 400 and response.json()["error"] == "not_an_image"


def test_health_banner_and_probes(client, default_model):
    assert client.get("/health").json() == {"status": "ok"}
    banner = client.get("/").json()
    assert banner["status"] == "ok" and banner["model"].startswith("food-classifier:")
    assert banner["git_sha"] == "unknown"  # a Bento built by make build or bento-release names its commit
    assert banner["runtime"]["runtime"] in graph_candidates(Path(default_model.path))
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_unknown_get_route_is_a_json_404(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404 and isinstance(response.json()["detail"], str)


def test_metrics_include_our_own(client, photo):
    post_image(client, photo("pizza.jpg"))
    text = client.get("/metrics").text
    assert helpers.metric_value(text, "tikka_predictions_total", label="pizza") >= 1
    assert helpers.metric_value(text, "tikka_image_decode_seconds_count") >= 1
    assert helpers.metric_value(text, "tikka_inference_seconds_count", method="classify") >= 1


@pytest.mark.parametrize("origin", settings.cors_origins)
def test_cors_allows_the_configured_origins(client, origin):
    preflight = client.options("/predict", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin


def test_cors_refuses_other_origins_and_covers_error_answers(client):
    preflight = client.options(
        "/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers
    rejected = client.post("/predict", json={"image": "x"}, headers={"Origin": "http://localhost:8501"})
    assert rejected.status_code == 415
    assert rejected.headers["access-control-allow-origin"] == "http://localhost:8501"


def test_openapi_documents_every_public_route(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for route in ("/v1/predict", "/v1/predict/explain", "/v1/llm/generate", "/v1/llm/dish"):
        assert "post" in paths[route], route
    upload = paths["/v1/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
    generate = paths["/v1/llm/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema = spec["components"]["schemas"].get(generate.get("$ref", "").split("/")[-1], generate)
    assert {"prompt", "temperature", "max_tokens", "stream"} <= set(schema["properties"])


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/predict", "POST"),
        ("GET", "/v1/predict", "POST"),
        ("POST", "/health", "GET"),
        ("POST", "/v1/llm/health", "GET"),
        ("POST", "/dashboard", "GET"),
        ("POST", "/readyz", "GET, HEAD"),
    ],
)
def test_wrong_method_is_a_405_with_allow_in_the_error_shape(client, method, path, allow):
    """The mounted app's 405s lacked Allow and named their error differently from BentoML's."""
    response = client.request(method, path)
    assert response.status_code == 405
    # Starlette builds Allow from a set: the order varies between runs.
    assert set(response.headers["allow"].split(", ")) == set(allow.split(", "))
    assert response.json() == {"detail": "Method Not Allowed", "error": "http_405"}


@pytest.mark.parametrize("media_type", ["Multipart/Form-Data", "MULTIPART/FORM-DATA"])
def test_a_mixed_case_media_type_is_a_valid_upload(client, photo, media_type):
    """Media types are case-insensitive. The guard accepted these, then BentoML parsed the
    body as JSON (a 422, and a logged traceback holding the body's bytes)."""
    request = client.build_request("POST", "/predict", files={"image": ("p.jpg", photo("pizza.jpg"), "image/jpeg")})
    original = request.headers["content-type"]
    boundary = original.split("boundary=", 1)[1]
    response = client.post(
        "/predict", content=request.read(), headers={"Content-Type": f"{media_type}; boundary={boundary}"}
    )
    assert_prediction(response, top="pizza", filename="p.jpg")


def test_the_file_name_is_echoed_as_a_plain_base_name(client, photo):
    """It was echoed raw: POSIX paths, NUL, markup and bidi overrides reached the client."""
    response = post_image(client, photo("pizza.jpg"), name="../../../etc/pass\u202ewd<b>.jpg")
    assert_prediction(response, top="pizza", filename="passwdb.jpg")


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("pizza", 200),  # the replaced deployment's Streamlit app sends a text field like this
        ("12345", 200),
        ("5" * 5000, 400),  # past Python's int-string limit: BentoML's json.loads raised, a 500
        ("[" * 100_000, 400),  # nested past the recursion limit: a 500 too
    ],
)
def test_extra_text_fields_are_ignored_or_refused_never_a_500(client, photo, value, status):
    response = client.post(
        "/predict", files={"image": ("p.jpg", photo("pizza.jpg"), "image/jpeg")}, data={"label": value}
    )
    assert response.status_code == status, response.text[:300]
    if status == 400:
        assert response.json()["error"] == "malformed_form" and "label" in response.json()["detail"]
