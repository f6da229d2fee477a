"""Privacy, against a really served Bento: uploads never touch the disk, and the log at
the default level holds no image bytes, prompts or API keys.

The temporary directory is watched by polling (every few ms) while uploads are in
flight; a file that BentoML or Starlette wrote for an upload lives for the whole
request (tens of ms), which the poll cannot miss: this test failed on the code that
took uploads as `Path` (a temporary file per upload) and on Starlette's 1 MB spool.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests import helpers, records

pytestmark = [pytest.mark.slow, pytest.mark.served]

API_KEY = "key-4b1d2f0e9a7c"
PROMPT_MARKER = "PROMPT-MARKER-71f3c2"
IMAGE_MARKER = b"IMAGE-MARKER-5e8a90"


class FileWatch:
    """Every regular file that appears under ``root`` while the watch runs."""

    def __init__(self, root: Path):
        self.root = root
        self.baseline = self.files()
        self.seen: set[str] = set()
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def files(self) -> set[str]:
        found = set()
        for dirpath, _, filenames in os.walk(self.root):
            found.update(os.path.join(dirpath, name) for name in filenames)
        return found

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen |= self.files() - self.baseline
            self.polls += 1
            time.sleep(0.002)

    def __enter__(self) -> FileWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def private_bento(default_model, sidecar, tmp_path_factory):
    home = tmp_path_factory.mktemp("private-bento")
    tmp = home / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp), "OLLAMA_HOST": sidecar.url, "TIKKA_API_KEYS": json.dumps([API_KEY])}
    with helpers.served_bento(home, env) as url:
        yield url, tmp, home / "serve.log"


def marked_photo(photo_bytes: bytes, pad_to: int = 0) -> bytes:
    """The pizza photo with a marker in a JPEG comment, padded past Starlette's 1 MB spool."""
    image = helpers.photo_image()
    data = helpers.encode(image, "JPEG", quality=90, comment=IMAGE_MARKER)
    return data + IMAGE_MARKER * max(0, (pad_to - len(data)) // len(IMAGE_MARKER))


def test_uploads_and_llm_calls_leave_no_file_and_no_secret_in_the_log(private_bento, photo):
    url, tmp, log_path = private_bento
    auth = {"Authorization": f"Bearer {API_KEY}"}
    small, large = marked_photo(photo("pizza.jpg")), marked_photo(photo("pizza.jpg"), pad_to=1_500_000)
    outcomes: list[int] = []
    with FileWatch(tmp) as watch, httpx.Client(base_url=url, timeout=120, limits=helpers.CLIENT_LIMITS) as client:
        for route in ("/predict", "/predict/explain"):
            for data in (small, large):
                response = client.post(route, files={"image": ("p.jpg", data, "image/jpeg")}, headers=auth)
                outcomes.append(response.status_code)
        bad = client.post("/predict", files={"image": ("x.jpg", IMAGE_MARKER * 50, "image/jpeg")}, headers=auth)
        wrong_key = client.post(
            "/predict", files={"image": ("p.jpg", small, "image/jpeg")}, headers={"X-API-Key": API_KEY + "-wrong"}
        )
        generated = client.post(
            "/llm/generate",
            headers=auth,
            json={"prompt": f"Name one spice. {PROMPT_MARKER}", "max_tokens": 8, "temperature": 0},
        )
        streamed = client.post(
            "/llm/generate",
            headers=auth,
            json={"prompt": f"Name one herb. {PROMPT_MARKER}", "max_tokens": 8, "stream": True},
        )
        too_long = client.post("/llm/generate", headers=auth, json={"prompt": PROMPT_MARKER * 400})
    assert outcomes == [200] * 4
    assert (bad.status_code, wrong_key.status_code, generated.status_code, streamed.status_code) == (400, 401, 200, 200)
    assert too_long.status_code == 422
    assert watch.polls > 100, "the watch must have been running during the uploads"
    assert watch.seen == set(), f"files written while serving uploads: {sorted(watch.seen)}"

    log = log_path.read_bytes()
    assert b"method=POST,path=/predict" in log, "the access log is on at the default level: the audit reads real lines"
    for secret in (IMAGE_MARKER, PROMPT_MARKER.encode(), API_KEY.encode()):
        assert secret not in log, f"{secret!r} appears in the log"
    for body in (bad.text, wrong_key.text, too_long.text):
        assert API_KEY not in body and PROMPT_MARKER not in body
    records.record(
        "privacy",
        [
            {
                "case": "uploads (2 routes x 150 KB and 1.5 MB), a bad image, a wrong key",
                "tried": 6,
                "expected": "no file under TMPDIR",
                "observed": f"{len(watch.seen)} files in {watch.polls} polls",
            },
            {
                "case": "LLM calls (plain, streamed, over-long prompt)",
                "tried": 3,
                "expected": "no prompt in the log",
                "observed": "absent",
            },
            {
                "case": "image bytes, prompts and the API key in the log",
                "tried": 3,
                "expected": "absent",
                "observed": f"absent from {len(log)} bytes of log",
            },
        ],
    )
