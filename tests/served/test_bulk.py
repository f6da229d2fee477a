"""bulk_classify, the BentoML task, on a served Bento: an archive and a gs:// prefix (the GCS
emulator), its progress while it runs, hostile archives, and /predict's p95 during a task."""

from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tests import helpers

pytestmark = [pytest.mark.slow, pytest.mark.served]
BUCKET = "tikka-photos"
ARCHIVE_LIMIT = 16_000_000
PIZZA = (helpers.ROOT / "tests" / "data" / "pizza.jpg").read_bytes()


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    with helpers.gcs_emulator(tmp_path_factory.mktemp("gcs")) as url:
        client = gcs.Client(project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": url})
        client.create_bucket(BUCKET)
        yield url, client


@pytest.fixture(scope="module")
def bulk_bento(default_model, storage, tmp_path_factory):
    env = {
        "STORAGE_EMULATOR_HOST": storage[0],
        "GOOGLE_CLOUD_PROJECT": "tikka-test",
        "TIKKA_BULK_ARCHIVE_BYTES": str(ARCHIVE_LIMIT),
        "TIKKA_BULK_MEMBER_BYTES": str(2_000_000),
    }
    with helpers.served_bento(tmp_path_factory.mktemp("bulk-bento"), env) as url:
        yield url


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def phone_and_broken_photos() -> dict[str, bytes]:
    return {
        "pizza.jpg": PIZZA,
        "dinner/guacamole.heic": helpers.phone_photo("HEIF", helpers.photo_image("guacamole.jpg")),
        "dinner/hamburger.avif": helpers.phone_photo("AVIF", helpers.photo_image("hamburger.jpg")),
        "broken.jpg": b"\xff\xd8\xff\xe0 not a JPEG",
        "notes.txt": b"not a photo",
    }


def submit(url: str, **request) -> str:
    response = httpx.post(f"{url}/v1/bulk_classify/submit", timeout=60, **request)
    assert response.status_code == 200, response.text
    return response.json()["task_id"]


def progress_of(url: str, task_id: str) -> dict:
    progress = httpx.get(f"{url}/v1/bulk_classify/progress", params={"task_id": task_id})
    assert progress.status_code == 200, progress.text
    return progress.json()


def wait_for_task(url: str, task_id: str, timeout_s: float = 180) -> list[dict]:
    """Progress records seen while it ran, the last one read after BentoML's status said it was done."""
    seen, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen.append(progress_of(url, task_id))
        if httpx.get(f"{url}/v1/bulk_classify/status", params={"task_id": task_id}).json()["status"] != "in_progress":
            return [*seen, progress_of(url, task_id)]
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} still running after {timeout_s} s: {seen[-1]}")


def result(url: str, task_id: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/bulk_classify/get", params={"task_id": task_id}, timeout=60)


def check_rows(rows: dict[str, dict], prefix: str = "") -> None:
    assert set(rows) == {
        f"{prefix}{name}" for name in ("pizza.jpg", "dinner/guacamole.heic", "dinner/hamburger.avif", "broken.jpg")
    }
    for name, dish in (
        ("pizza.jpg", "pizza"),
        ("dinner/guacamole.heic", "guacamole"),
        ("dinner/hamburger.avif", "cheeseburger"),
    ):
        assert next(iter(rows[prefix + name]["predictions"])) == dish, rows[prefix + name]
        assert rows[prefix + name]["model"].startswith("food-classifier:")
    assert rows[prefix + "broken.jpg"]["error"]["code"] == "not_an_image"


def test_an_archive_is_classified_with_a_row_per_image_and_a_failed_image_is_a_row(bulk_bento):
    task_id = submit(
        bulk_bento, files={"archive": ("photos.zip", zip_of(phone_and_broken_photos()), "application/zip")}
    )
    final = wait_for_task(bulk_bento, task_id)[-1]
    assert final == {"source": "photos.zip", "total": 4, "done": 4, "failed": 1, "skipped": 1, "state": "completed"}
    answer = result(bulk_bento, task_id)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/x-ndjson")
    check_rows({row["file"]: row for row in map(json.loads, answer.text.splitlines())})


def test_a_bucket_prefix_through_the_tikka_command(bulk_bento, storage, tmp_path):
    """`tikka classify --bulk gs://...`: submitted, followed, the rows downloaded; the rows also land
    beside the photos in the bucket."""
    bucket = storage[1].bucket(BUCKET)
    for name, data in phone_and_broken_photos().items():
        bucket.blob(f"week-49/{name}").upload_from_string(data)
    output = tmp_path / "rows.jsonl"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "tikka"), "classify", "--bulk", f"gs://{BUCKET}/week-49",
         "--url", bulk_bento, "--output", str(output)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # broken.jpg failed
    rows = {row["file"]: row for row in map(json.loads, output.read_text().splitlines())}
    check_rows(rows, prefix=f"gs://{BUCKET}/week-49/")
    assert "4/4" in done.stderr and "error not_an_image" in done.stderr, done.stderr
    written = bucket.blob("week-49/predictions.jsonl").download_as_text()
    assert [json.loads(line) for line in written.splitlines()] == [
        json.loads(line) for line in output.read_text().splitlines()
    ]


def test_hostile_archives_and_bad_requests_get_a_clear_error(bulk_bento):
    cases = {
        "zip bomb": (zip_of({"pizza.jpg": PIZZA, "bomb.jpg": bytes(100_000_000)}), 413, "archive_too_large"),
        "path traversal": (zip_of({"pizza.jpg": PIZZA, "../../etc/cron.d/x.jpg": PIZZA}), 400, "unsafe_archive"),
        "not an archive": (b"plain text", 400, "not_an_archive"),
    }
    for case, (archive, status, code) in cases.items():
        task_id = submit(bulk_bento, files={"archive": ("photos.zip", archive)})
        wait_for_task(bulk_bento, task_id)
        answer = result(bulk_bento, task_id)
        assert (answer.status_code, answer.json()["error"]) == (status, code), (case, answer.text)
        assert answer.json()["detail"], case
    refused = {
        "an archive over the limit": ({"files": {"archive": ("big.zip", bytes(ARCHIVE_LIMIT + 1))}}, 413, "upload_too_large"),
        "a URL for a file": ({"data": {"archive": "http://169.254.169.254/latest"}}, 400, "not_a_file"),
        "neither archive nor source": ({"data": {"label": "x"}}, 400, "bad_source"),
        "another scheme": ({"data": {"source": "s3://photos/dinner"}}, 400, "bad_source"),
        "a bucket that does not exist": ({"data": {"source": "gs://no-such-bucket/x"}}, 404, "source_not_found"),
    }  # fmt: skip
    for case, (request, status, code) in refused.items():
        answer = httpx.post(f"{bulk_bento}/v1/bulk_classify", timeout=60, **request)
        assert (answer.status_code, answer.json()["error"]) == (status, code), (case, answer.text)
    missing = httpx.get(f"{bulk_bento}/v1/bulk_classify/progress", params={"task_id": "nope"})
    assert (missing.status_code, missing.json()["error"]) == (404, "task_not_found")
    assert httpx.post(f"{bulk_bento}/predict", files={"image": ("p.jpg", PIZZA)}).status_code == 200


def test_predict_p95_during_a_bulk_task_stays_within_1_5x_of_idle(bulk_bento):
    """Bulk images run in the gaps of live traffic (TIKKA_BULK_LIVE_QUIET_MS): a closed-loop
    /predict client sees its idle latency while a task of 150 photos is running."""

    def p95_of_predictions(count: int = 40) -> float:
        latencies = []
        with httpx.Client(base_url=bulk_bento, timeout=60) as client:
            for _ in range(count):
                started = time.perf_counter()
                assert client.post("/predict", files={"image": ("p.jpg", PIZZA)}).status_code == 200
                latencies.append(time.perf_counter() - started)
        return statistics.quantiles(latencies, n=20)[-1]

    p95_of_predictions(10)  # warm
    idle = p95_of_predictions()
    task_id = submit(bulk_bento, files={"archive": ("many.zip", zip_of({f"{i:03}.jpg": PIZZA for i in range(150)}))})
    deadline = time.monotonic() + 60
    while progress_of(bulk_bento, task_id)["done"] < 5:
        assert time.monotonic() < deadline, "the task made no progress"
        time.sleep(0.05)
    during = p95_of_predictions()
    progress = progress_of(bulk_bento, task_id)
    assert progress["state"] == "running" and 5 <= progress["done"] < 150, progress  # measured while it ran
    final = wait_for_task(bulk_bento, task_id)[-1]
    assert final["done"] == final["total"] == 150 and final["failed"] == 0
    print(
        f"\n/predict p95 idle {idle * 1000:.1f} ms, during the bulk task {during * 1000:.1f} ms, bulk progress {progress}"
    )
    assert during <= 1.5 * idle, f"/predict p95 {during * 1000:.1f} ms during the task, {idle * 1000:.1f} ms idle"
