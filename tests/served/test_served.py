"""Against a really served Bento: `bentoml serve service:Gateway` in a subprocess.

This is where adaptive batching happens (in-process there is none), and where
the limits come from environment settings (2 MB body, 4 Mpx images here).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import platform
from pathlib import Path

import bentoml
import httpx
import pytest
from PIL import Image

from tests import helpers
from tikka.model.runtime import graph_candidates

pytestmark = [pytest.mark.slow, pytest.mark.served]


def predict(url: str, data: bytes, name: str = "photo.jpg", route: str = "/predict") -> httpx.Response:
    return httpx.post(f"{url}{route}", files={"image": (name, data, "image/jpeg")}, timeout=60)


def test_ready_only_after_the_warm_up_inference(bento):
    assert httpx.get(f"{bento}/readyz").status_code == 200
    metrics = httpx.get(f"{bento}/metrics").text
    assert helpers.metric_value(metrics, "tikka_inference_seconds_count", method="warmup") == 1


@pytest.mark.parametrize(
    ("name", "dish"), [("pizza.jpg", "pizza"), ("guacamole.jpg", "guacamole"), ("hamburger.jpg", "cheeseburger")]
)
def test_sample_photos_classify_as_their_dish(bento, photo, name, dish):
    response = predict(bento, photo(name), name)
    assert response.status_code == 200, response.text
    body = response.json()
    assert next(iter(body["predictions"])) == dish
    assert body["filename"] == name and body["model"].startswith("food-classifier:")


def test_served_answers_equal_the_stock_torch_path(bento, photo, default_model):
    """The whole lean path (draft decode, uint8 pixels, the graph on the runtime and precision
    chosen at start-up) against the replaced server's: full decode, the checkpoint's own
    processor, torch. The same top-1; probabilities within 1.5e-3 at fp32, and within what
    the agreement gate measured at import for a reduced precision."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    served_runtime = httpx.get(f"{bento}/").json()["runtime"]["runtime"]
    precision = served_runtime.partition("-")[2]
    gate = json.loads((Path(default_model.path) / "precision_gate.json").read_text())
    # /predict rounds to 3 decimals: 5e-4 of the 1.5e-3 is rounding.
    tolerance = 1.5e-3 + (gate[precision]["max_probability_difference"] if precision else 0)

    processor = AutoImageProcessor.from_pretrained(default_model.path)
    model = AutoModelForImageClassification.from_pretrained(default_model.path).eval()
    for name in ("pizza.jpg", "guacamole.jpg", "hamburger.jpg"):
        image = Image.open(io.BytesIO(photo(name))).convert("RGB")
        with torch.inference_mode():
            stock = model(**processor(images=image, return_tensors="pt")).logits.softmax(-1)[0].numpy()
        served = predict(bento, photo(name), name).json()["predictions"]
        labels = list(served)
        assert labels[0] == model.config.id2label[int(stock.argmax())]
        for label, probability in served.items():
            assert abs(probability - stock[model.config.label2id[label]]) < tolerance, (name, label, served_runtime)


def test_concurrent_requests_are_batched(bento, photo):
    data = photo("pizza.jpg")

    async def burst(client: httpx.AsyncClient, size: int) -> list[int]:
        responses = await asyncio.gather(
            *(client.post(f"{bento}/predict", files={"image": ("p.jpg", data, "image/jpeg")}) for _ in range(size))
        )
        return [r.status_code for r in responses]

    def batch_counts() -> tuple[float, float]:
        text = httpx.get(f"{bento}/metrics").text
        name = "bentoml_service_adaptive_batch_size"
        total = helpers.metric_value(text, f"{name}_count", method_name="classify")
        singles = helpers.metric_value(text, f"{name}_bucket", method_name="classify", le="1.0")
        return total, total - singles

    async def run() -> None:
        async with httpx.AsyncClient(timeout=120) as client:
            for _ in range(3):  # the batcher's cost model needs ~10 dispatches to warm up
                assert set(await burst(client, 12)) == {200}
            batches_before, multi_before = batch_counts()
            statuses = await burst(client, 32)
            assert statuses == [200] * 32
            batches_after, multi_after = batch_counts()
            assert batches_after - batches_before < 32, "32 requests should need fewer than 32 batches"
            assert multi_after > multi_before, "some batches should hold more than one image"

    asyncio.run(run())


def test_sustained_concurrent_load_has_no_failures(bento, photo):
    """More than 100 calls through the gateway -> classifier client (BentoML refreshes
    that client's session every 100 calls by default, failing calls in flight)."""
    data = photo("pizza.jpg")

    async def run() -> list[int]:
        statuses: list[int] = []
        remaining = iter(range(240))

        async def client(http: httpx.AsyncClient) -> None:
            for _ in remaining:
                response = await http.post(f"{bento}/predict", files={"image": ("p.jpg", data, "image/jpeg")})
                statuses.append(response.status_code)

        async with httpx.AsyncClient(timeout=120) as http:
            await asyncio.gather(*(client(http) for _ in range(16)))
        return statuses

    statuses = asyncio.run(run())
    assert len(statuses) == 240
    assert statuses.count(200) == 240, {s: statuses.count(s) for s in set(statuses)}


def test_latency_returns_to_idle_after_a_burst(bento, photo):
    """BentoML's batcher learnt its wait from queueing during a burst and then held every
    lone request that long (5x the idle latency, for minutes); tikka/bentoml_patches.py caps it."""
    data = photo("pizza.jpg")

    def idle_latency() -> float:
        timings = []
        with httpx.Client(timeout=60) as http:
            for _ in range(15):
                response = http.post(f"{bento}/predict", files={"image": ("p.jpg", data, "image/jpeg")})
                assert response.status_code == 200
                timings.append(response.elapsed.total_seconds())
        return sorted(timings)[len(timings) // 2]

    async def load(seconds: float) -> None:
        """16 clients back to back for longer than the batcher's 5 s refresh interval."""
        deadline = asyncio.get_running_loop().time() + seconds

        async def client(http: httpx.AsyncClient) -> None:
            while asyncio.get_running_loop().time() < deadline:
                response = await http.post(f"{bento}/predict", files={"image": ("p.jpg", data, "image/jpeg")})
                assert response.status_code == 200

        async with httpx.AsyncClient(timeout=120) as http:
            await asyncio.gather(*(client(http) for _ in range(16)))

    before = idle_latency()
    asyncio.run(load(12))
    after = idle_latency()
    assert after < 2 * before, f"median {after * 1000:.0f} ms after the burst, {before * 1000:.0f} ms before"


def test_beyond_max_concurrency_the_gateway_sheds_at_once_with_a_json_429(default_model, tmp_path, photo):
    """BentoML's own 429 had no detail, no Retry-After and no CORS header; probes answer throughout."""
    data, origin = photo("pizza.jpg"), "http://localhost:8501"

    async def run(url: str):
        async with httpx.AsyncClient(timeout=60) as http:
            uploads = [
                http.post(f"{url}/predict", files={"image": ("p.jpg", data, "image/jpeg")}, headers={"Origin": origin})
                for _ in range(32)
            ]
            probes = [http.get(f"{url}{path}") for path in ("/livez", "/readyz", "/metrics") for _ in range(3)]
            return await asyncio.gather(*uploads, *probes)

    with helpers.served_bento(tmp_path, {"TIKKA_MAX_CONCURRENCY": "4"}) as url:
        responses = asyncio.run(run(url))
        after = predict(url, data)
    uploads, probes = responses[:32], responses[32:]
    shed = [r for r in uploads if r.status_code == 429]
    assert {r.status_code for r in uploads} == {200, 429} and len(shed) < 32 - 3
    for response in shed:
        assert response.json()["error"] == "too_many_requests" and "4 requests" in response.json()["detail"]
        assert response.headers["retry-after"] == "1"
        assert response.headers["access-control-allow-origin"] == origin
    assert all(p.status_code == 200 for p in probes)
    assert after.status_code == 200, "serves normally once the load is gone"


@pytest.mark.parametrize("route", ["/predict", "/llm/generate"])
def test_a_body_shorter_than_its_content_length_is_a_408_not_a_hang(bento, route):
    """Headers promise 1000 bytes, 10 arrive, the client waits: 408 after the 2 s idle timeout."""
    import socket
    import time

    host, port = bento.removeprefix("http://").split(":")
    content_type = "multipart/form-data; boundary=x" if route == "/predict" else "application/json"
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            f"POST {route} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: 1000\r\nOrigin: http://localhost:8501\r\n\r\n".encode()
            + b"0123456789"
        )
        answer = b""
        while b'"}' not in answer and (chunk := sock.recv(65536)):  # headers, then the JSON body
            answer += chunk
        answer = answer.decode("latin-1")
    elapsed = time.monotonic() - started
    assert answer.startswith("HTTP/1.1 408"), answer[:200]
    assert '"error":"request_timeout"' in answer.replace(" ", "") and "access-control-allow-origin" in answer.lower()
    assert elapsed < 20, f"answered after {elapsed:.0f} s"  # BentoML's own timeout is 60 s


def test_a_slow_but_steady_upload_is_accepted(bento, photo):
    """Chunks 1 s apart, 4 s in all: slower than the 2 s idle timeout in total, never idle that long."""
    import time

    data = photo("pizza.jpg")
    body = (
        b'--x\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        + data
        + b"\r\n--x--\r\n"
    )

    def slowly():
        for i in range(4):
            yield body[i * len(body) // 4 : (i + 1) * len(body) // 4]
            time.sleep(1)

    response = httpx.post(
        f"{bento}/predict", content=slowly(), headers={"Content-Type": "multipart/form-data; boundary=x"}, timeout=60
    )
    assert response.status_code == 200, response.text


def test_every_bad_input_gets_its_status(bento, photo):
    for case_id, request, status, error in helpers.bad_uploads(2_000_000, 4_000_000, photo("pizza.jpg")):
        response = httpx.post(f"{bento}/predict", timeout=60, **request)
        assert response.status_code == status, (case_id, response.text)
        body = response.json()
        assert body["error"] == error and isinstance(body["detail"], str), case_id
    assert predict(bento, photo("pizza.jpg")).status_code == 200


def test_explain_served(bento, photo):
    response = predict(bento, photo("hamburger.jpg"), "hamburger.jpg", route="/predict/explain")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predicted_class"] == "cheeseburger" and body["grid_size"] == "7x7"
    image = Image.open(io.BytesIO(base64.b64decode(body["attention_map"])))
    assert image.size == (428, 640)


def test_metrics_count_requests_and_our_own_series(bento, photo):
    predict(bento, photo("guacamole.jpg"))
    predict(bento, b"")
    text = httpx.get(f"{bento}/metrics").text
    assert (
        helpers.metric_value(text, "bentoml_service_request_total", endpoint="/predict", http_response_code="200") >= 1
    )
    assert (
        helpers.metric_value(text, "bentoml_service_request_total", endpoint="/predict", http_response_code="400") >= 1
    )
    assert helpers.metric_value(text, "tikka_predictions_total", label="guacamole") >= 1
    assert helpers.metric_value(text, "tikka_image_decode_seconds_count") >= 1
    assert helpers.metric_value(text, "tikka_inference_seconds_count", method="classify") >= 1
    assert helpers.metric_value(text, "bentoml_service_adaptive_batch_size_count", method_name="classify") >= 1


def test_health_and_banner_served(bento):
    assert httpx.get(f"{bento}/health").json() == {"status": "ok"}
    banner = httpx.get(f"{bento}/").json()
    # Served from the source tree, not a built Bento: no git_sha build argument.
    assert banner["model"].startswith("food-classifier:") and banner["git_sha"] == "unknown"
    assert httpx.get(f"{bento}/livez").status_code == 200
    metrics = httpx.get(f"{bento}/metrics").text
    assert helpers.metric_value(metrics, "tikka_build_info", model_tag=banner["model"], git_sha="unknown") == 1
    # TIKKA_RUNTIME=auto, TIKKA_PRECISION=auto (the defaults): both graph runtimes and each
    # reduced precision that passed its gate (and runs natively here) were timed; the fastest serves.
    runtime = banner["runtime"]
    candidates = graph_candidates(Path(bentoml.models.get(banner["model"]).path))
    assert runtime["chosen"] == "measured" and set(runtime["candidates_ms"]) == set(candidates)
    assert runtime["candidates_ms"][runtime["runtime"]] == min(runtime["candidates_ms"].values())
    assert platform.machine() in runtime["cpu"]
    assert helpers.metric_value(metrics, "tikka_runtime_info", runtime=runtime["runtime"], chosen="measured") == 1
    for name, ms in runtime["candidates_ms"].items():
        seconds = helpers.metric_value(metrics, "tikka_runtime_candidate_seconds", runtime=name)
        assert seconds * 1000 == pytest.approx(ms, abs=0.01)


def test_unknown_paths_share_one_metrics_label(bento, photo):
    """Every unknown path added series to /metrics for good (a 60 KB URL: 1.4 MB; NUL bytes
    from /predict%00; any suffix under /static_content/). Now they count under one label
    (the static ones under their prefix), and still get their 404."""
    httpx.get(f"{bento}/warm-up-the-unmatched-series")
    httpx.get(f"{bento}/static_content/warm-up-the-static-series.js")
    assert predict(bento, photo("pizza.jpg")).status_code == 200  # /predict's own series exist before
    before = len(httpx.get(f"{bento}/metrics").content)
    # 8 KB, not 60: uvicorn's h11 parser refuses a request head over 16 KB when it arrives in
    # more than one read (a 400, then a closed connection: a reset under load in CI), and
    # nginx answers 414 past 8 KB anyway.
    paths = [f"/no-such-page-{i}" for i in range(50)] + ["/predict%00", "/" + "x" * 8_000, "/v1/nothing"]
    # Under the static assets' prefix, a random suffix each: these kept their raw path.
    static = [f"/static_content/no-such-asset-{i}-{'y' * 1000}.js" for i in range(20)]
    for path in static:
        assert httpx.get(f"{bento}{path}").status_code == 404, path
    for path in paths:
        response = httpx.get(f"{bento}{path}")
        assert response.status_code in (404, 405) and response.json()["error"], path
    text = httpx.get(f"{bento}/metrics").text
    assert len(text.encode()) - before < 5_000, "unknown paths added series"
    assert "\x00" not in text and "no-such-page" not in text and "xxxxxxxx" not in text and "no-such-asset" not in text
    assert helpers.metric_value(text, "bentoml_service_request_total", endpoint="/static_content/") >= len(static)
    unmatched = helpers.metric_value(
        text, "bentoml_service_request_total", endpoint="/<unmatched>", http_response_code="404"
    )
    assert unmatched >= len(paths), unmatched
    assert (
        helpers.metric_value(text, "bentoml_service_request_total", endpoint="/predict", http_response_code="200") >= 1
    )
