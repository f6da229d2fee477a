"""`tikka classify` (the console script) against a really served Bento, rate-limited so that
the command meets real 429s with Retry-After: a folder of every accepted format, a corrupt
photo and a text file; the rows, the error row, the exit code, the progress, the resume."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests import helpers

pytestmark = [pytest.mark.slow, pytest.mark.served]
TIKKA = str(Path(sys.executable).parent / "tikka")  # [project.scripts] in pyproject.toml


@pytest.fixture(scope="module")
def limited_bento(default_model, tmp_path_factory):
    """2 requests a second per client, bursts of 2: four at once are sure to get 429s."""
    env = {"TIKKA_RATE_LIMIT_PER_S": "2", "TIKKA_RATE_LIMIT_BURST": "2"}
    with helpers.served_bento(tmp_path_factory.mktemp("cli-bento"), env) as url:
        yield url


def photo_folder(root: Path) -> dict[str, str]:
    """Every accepted format, in nested folders, and the top-1 label each should get."""
    pizza, guacamole = helpers.photo_image("pizza.jpg"), helpers.photo_image("guacamole.jpg")
    files = {
        "pizza.jpg": ((helpers.ROOT / "tests" / "data" / "pizza.jpg").read_bytes(), "pizza"),
        "dips/guacamole.png": (helpers.encode(guacamole, "PNG"), "guacamole"),
        "dips/guacamole.webp": (helpers.encode(guacamole, "WEBP"), "guacamole"),
        "pizza.gif": (helpers.encode(pizza.convert("P"), "GIF"), "pizza"),
        "phone/IMG_0001.HEIC": (helpers.phone_photo("HEIF", pizza), "pizza"),
        "phone/android/PXL_0001.avif": (helpers.phone_photo("AVIF", guacamole), "guacamole"),
        "broken.jpg": (b"\xff\xd8\xff\xe0 this is not a JPEG", None),
        "notes.txt": (b"not a photo", None),
        ".thumbnails/pizza.jpg": (helpers.encode(pizza, "JPEG"), None),  # hidden: left out
    }
    for name, (data, _) in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return {str(root / name): label for name, (_, label) in files.items() if label}


def tikka(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TIKKA, *args], capture_output=True, text=True, timeout=300)


def predictions_served(url: str) -> float:
    return helpers.metric_value(httpx.get(f"{url}/metrics").text, "tikka_predictions_total")


def rows_of(path: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len({row["file"] for row in rows}) == len(rows), "one row per file"
    return {row["file"]: row for row in rows}


def test_classify_a_folder_then_resume(limited_bento, tmp_path):
    photos = tmp_path / "photos"
    expected = photo_folder(photos)
    broken = str(photos / "broken.jpg")
    output = tmp_path / "out" / "predictions.jsonl"

    done = tikka("classify", str(photos), "--url", limited_bento, "--output", str(output), "--concurrency", "4")
    assert done.returncode == 1, "a file failed, so the command fails"
    rows = rows_of(output)
    assert set(rows) == {*expected, broken}
    for file, label in expected.items():
        assert next(iter(rows[file]["predictions"])) == label, rows[file]
        assert len(rows[file]["predictions"]) == 5 and rows[file]["model"].startswith("food-classifier:")
    assert rows[broken]["error"]["status"] == 400 and rows[broken]["error"]["code"] == "not_an_image"
    assert "6/7" in done.stderr or "7/7" in done.stderr, done.stderr  # the progress bar's last state
    summary = done.stderr
    for line in ("classified", "failed", "skipped (not images)", "error not_an_image"):
        assert line in summary, summary
    assert int(summary_value(summary, "skipped (not images)")) == 1
    assert int(summary_value(summary, "retries (429, 503, connection)")) > 0, "the rate limit was met and retried"

    # The corrupt photo replaced by a real one: a re-run sends only that one.
    (photos / "broken.jpg").write_bytes(helpers.encode(helpers.photo_image("hamburger.jpg"), "JPEG"))
    before = predictions_served(limited_bento)
    again = tikka("classify", str(photos), "--url", limited_bento, "--output", str(output))
    assert again.returncode == 0, again.stderr
    assert predictions_served(limited_bento) - before == 1
    assert int(summary_value(again.stderr, "done by an earlier run")) == len(expected)
    resumed = rows_of(output)
    assert set(resumed) == set(rows) and "error" not in resumed[broken]
    assert {file: resumed[file] for file in expected} == {file: rows[file] for file in expected}


def test_csv_rows_and_explanations(limited_bento, tmp_path):
    photos = tmp_path / "photos"
    (photos / "dinner").mkdir(parents=True)
    (photos / "dinner" / "pizza.heic").write_bytes(helpers.phone_photo("HEIF"))
    output, explained = tmp_path / "rows.csv", tmp_path / "heatmaps"
    done = tikka(
        "classify", str(photos), "--url", limited_bento, "--output", str(output), "--explain-dir", str(explained)
    )
    assert done.returncode == 0, done.stderr
    (row,) = list(csv.DictReader(output.open()))
    assert row["label"] == "pizza" and float(row["probability"]) > 0.5 and not row["error"]
    assert json.loads(row["predictions"])["pizza"] == float(row["probability"])
    heatmap = explained / "dinner" / "pizza.png"
    assert Image.open(heatmap).format == "PNG"


def test_models_names_what_the_bento_serves(limited_bento, default_model):
    listed = subprocess.run([TIKKA, "models", "--url", limited_bento], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    served, _, stored = listed.stderr.partition("in the store")
    assert str(default_model.tag) in served and str(default_model.tag) in stored, listed.stderr


def test_without_a_service_every_file_fails_with_the_reason(tmp_path):
    (tmp_path / "pizza.jpg").write_bytes((helpers.ROOT / "tests" / "data" / "pizza.jpg").read_bytes())
    done = subprocess.run(
        [TIKKA, "classify", str(tmp_path), "--url", "http://127.0.0.1:9", "--retries", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]  # no --output: rows on stdout
    assert row["error"]["code"] == "ConnectError" and row["file"].endswith("pizza.jpg")


def summary_value(text: str, name: str) -> str:
    """A value from the summary table that the command prints at the end."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip("│┃| ").split("│")]
        if len(cells) == 2 and cells[0] == name:
            return cells[1]
    raise AssertionError(f"{name!r} is not in the summary:\n{text}")
