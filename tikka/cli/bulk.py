"""`tikka classify --bulk gs://bucket/prefix` (or a local zip or tar): one bulk_classify task,
submitted, followed to the end, and its rows written where `tikka classify` writes its own."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tikka.cli.classify import Client, Output, Tally, error_of

BULK = "/v1/bulk_classify"
POLL_S = 0.5


class BulkFailed(Exception):
    """The task was refused or failed: the API's error body, with its status."""


def submit(http: httpx.Client, client: Client, target: str) -> str:
    """The task ID of a bulk_classify task for ``target``: a gs:// prefix, or a local archive uploaded."""
    if target.startswith("gs://"):
        request = {"data": {"source": target}}
    else:
        path = Path(target)
        request = {"files": {"archive": (path.name, path.read_bytes(), "application/octet-stream")}}
    response = http.post(f"{client.url}{BULK}/submit", headers=client.headers, timeout=client.timeout_s, **request)
    if response.status_code != 200:
        raise BulkFailed(json.dumps(error_of(response)))
    return response.json()["task_id"]


def follow(http: httpx.Client, client: Client, task_id: str, on_progress: Callable[[dict], None]) -> list[dict]:
    """Poll the task's progress until it ends; its rows, or ``BulkFailed``."""
    while True:
        progress = http.get(f"{client.url}{BULK}/progress", params={"task_id": task_id}, headers=client.headers)
        if progress.status_code == 200:
            on_progress(progress.json())
        # BentoML's own status says when the result is stored (our progress may say so first).
        status = http.get(f"{client.url}{BULK}/status", params={"task_id": task_id}, headers=client.headers)
        if status.status_code != 200:
            raise BulkFailed(json.dumps(error_of(status)))
        if status.json()["status"] != "in_progress":
            break
        time.sleep(POLL_S)
    result = http.get(f"{client.url}{BULK}/get", params={"task_id": task_id}, headers=client.headers, timeout=300)
    if result.status_code != 200:
        raise BulkFailed(json.dumps(error_of(result)))
    return [json.loads(line) for line in result.text.splitlines() if line.strip()]


def classify_bulk(target: str, client: Client, output: Output, progress: Callable[[Tally], None]) -> Tally:
    tally = Tally()
    with httpx.Client() as http:
        task_id = submit(http, client, target)

        def on_progress(state: dict) -> None:
            tally.total, tally.skipped = state["total"], state["skipped"]
            tally.failed = state["failed"]
            tally.classified = state["done"] - state["failed"]
            progress(tally)

        rows = follow(http, client, task_id, on_progress)
    counted = Tally(total=len(rows), skipped=tally.skipped)  # from the rows themselves, now that all are in
    for row in rows:
        output.write(row)
        counted.count(row)
    progress(counted)
    return counted
