"""The load test itself, run headless for a few seconds against the served Bento and the real sidecar."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.served]


def test_locustfile_drives_every_route_without_failures(llm_bento, tmp_path):
    prefix = tmp_path / "load"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(ROOT / "locustfile.py"),
            "--headless",
            "--host",
            llm_bento,
            "-u",
            "6",
            "-r",
            "6",
            "-t",
            "12s",
            "--think-time",
            "0.3",
            "--llm-max-tokens",
            "8",
            "--csv",
            str(prefix),
            "--only-summary",
            "--exit-code-on-error",
            "1",
        ],
        cwd=ROOT,
        check=True,
        timeout=120,
        capture_output=True,
    )
    with open(f"{prefix}_stats.csv") as fh:
        rows = {row["Name"]: row for row in csv.DictReader(fh)}
    # Every user class ran, every response had the right shape (the locustfile checks it).
    assert int(rows["/predict"]["Request Count"]) > 0
    assert int(rows["Aggregated"]["Request Count"]) >= int(rows["/predict"]["Request Count"])
    assert int(rows["Aggregated"]["Failure Count"]) == 0, rows
    # 4000 px phone photos are part of the mix.
    assert any(path.stat().st_size > 1_000_000 for path in (ROOT / "benchmarks" / "photos").glob("*.jpg"))
