"""`tikka classify`: every image under some paths, through a served Bento's public API.

A client like the front end: HTTP only, never the services. One row per file, written as
each answer arrives, so that an interrupted run loses nothing and a re-run with the same
output resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import email.utils
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tikka.model.formats import EXTENSIONS

# Statuses worth another try: shed load (429) and a service not ready or overloaded (503).
RETRIED_STATUSES = (429, 503)
CSV_COLUMNS = ("file", "label", "probability", "predictions", "model", "error")


def walk(paths: Iterable[Path]) -> Iterator[tuple[Path, bool]]:
    """(file, is an image by its ending) for every file under ``paths``, folders recursively,
    in a stable order; hidden files and folders are left out."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                relative = child.relative_to(path).parts
                if child.is_file() and not any(part.startswith(".") for part in relative):
                    yield child, is_image_name(child)
        elif path.is_file():
            yield path, is_image_name(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")


def is_image_name(path: Path) -> bool:
    return path.suffix.lower().lstrip(".") in EXTENSIONS


def retry_after_s(response: httpx.Response, attempt: int, base_s: float) -> float:
    """The server's ``Retry-After`` (seconds or an HTTP date), else exponential backoff."""
    value = response.headers.get("retry-after", "")
    if value.isdigit():
        return float(value)
    if value and (when := email.utils.parsedate_to_datetime(value)) is not None:
        return max(0.0, when.timestamp() - time.time())
    return base_s * 2**attempt


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The API's error body (``{"error", "detail"}``) with the status, or the status alone."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return {
        "status": response.status_code,
        "code": body.get("error", f"http_{response.status_code}"),
        "detail": body.get("detail", response.reason_phrase),
    }


class Output:
    """The rows file, JSON Lines or CSV by its ending (stdout as JSON Lines when there is none).

    ``done``: the files an earlier run classified. Their rows are kept; rows of files that
    failed are dropped, so those are tried again and each file keeps one row.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.is_csv = path is not None and path.suffix.lower() == ".csv"
        kept = self.read_done_rows() if path is not None and path.exists() else []
        self.done = {row["file"] for row in kept}
        if path is None:
            self.handle = None
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # Rewritten whole before the first new row: a failed row from the last run goes away.
        self.handle = path.open("w", newline="")
        self.writer = csv.DictWriter(self.handle, CSV_COLUMNS) if self.is_csv else None
        if self.writer:
            self.writer.writeheader()
        for row in kept:
            self.write_raw(row)

    def read_done_rows(self) -> list[dict[str, Any]]:
        with self.path.open(newline="") as handle:
            if self.is_csv:
                rows = [row for row in csv.DictReader(handle) if not row.get("error")]
            else:  # a last line cut short by an interruption is not a row
                rows = []
                for line in handle:
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(row, dict) and "file" in row and "error" not in row:
                        rows.append(row)
        return rows

    def write(self, row: dict[str, Any]) -> None:
        if self.is_csv:
            predictions = row.get("predictions") or {}
            label = next(iter(predictions), "")
            row = {
                "file": row["file"],
                "label": label,
                "probability": predictions.get(label, ""),
                "predictions": json.dumps(predictions) if predictions else "",
                "model": row.get("model", ""),
                "error": json.dumps(row["error"]) if "error" in row else "",
            }
        self.write_raw(row)

    def write_raw(self, row: dict[str, Any]) -> None:
        if self.handle is None:
            print(json.dumps(row), flush=True)
        elif self.writer:
            self.writer.writerow(row)
            self.handle.flush()
        else:
            self.handle.write(json.dumps(row) + "\n")
            self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


@dataclass
class Tally:
    total: int = 0
    classified: int = 0
    failed: int = 0
    skipped: int = 0  # not images by their ending
    resumed: int = 0  # classified by an earlier run
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # by the API's error code

    def count(self, row: dict[str, Any]) -> None:
        if "error" in row:
            self.failed += 1
            self.errors[row["error"]["code"]] = self.errors.get(row["error"]["code"], 0) + 1
        else:
            self.classified += 1


@dataclass(frozen=True)
class Client:
    url: str
    api_key: str | None = None
    retries: int = 6
    backoff_s: float = 0.5
    timeout_s: float = 120.0

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key} if self.api_key else {}

    async def post_image(
        self, http: httpx.AsyncClient, route: str, path: Path, data: bytes, tally: Tally
    ) -> httpx.Response:
        """POST the image as the ``image`` field, trying again on 429, 503 and a refused or
        reset connection, up to ``retries`` times."""
        for attempt in range(self.retries + 1):
            try:
                response = await http.post(
                    f"{self.url}{route}",
                    files={"image": (path.name, data)},
                    headers=self.headers,
                    timeout=self.timeout_s,
                )
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                if attempt == self.retries:
                    raise
                await asyncio.sleep(self.backoff_s * 2**attempt)
                tally.retries += 1
                continue
            if response.status_code not in RETRIED_STATUSES or attempt == self.retries:
                return response
            tally.retries += 1
            await asyncio.sleep(retry_after_s(response, attempt, self.backoff_s))
        raise AssertionError("unreachable")


def relative_name(path: Path, roots: list[Path]) -> Path:
    """Where an explanation of ``path`` goes under --explain-dir: its place under the root it was found in."""
    for root in roots:
        if root.is_dir() and path.is_relative_to(root):
            return path.relative_to(root)
    return Path(path.name)


async def classify_one(
    client: Client, http: httpx.AsyncClient, path: Path, roots: list[Path], explain_dir: Path | None, tally: Tally
) -> dict[str, Any]:
    row: dict[str, Any] = {"file": str(path)}
    try:
        data = path.read_bytes()
        response = await client.post_image(http, "/predict", path, data, tally)
        if response.status_code != 200:
            return {**row, "error": error_of(response)}
        body = response.json()
        row.update(predictions=body["predictions"], model=body["model"])
        if explain_dir is not None:
            explained = await client.post_image(http, "/predict/explain", path, data, tally)
            if explained.status_code == 200:
                target = explain_dir / relative_name(path, roots).with_suffix(".png")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(base64.b64decode(explained.json()["attention_map"]))
                row["explanation"] = str(target)
            else:
                row["explanation_error"] = error_of(explained)
        return row
    except OSError as exc:  # unreadable here, or the service unreachable after every retry
        return {**row, "error": {"status": None, "code": type(exc).__name__, "detail": str(exc)}}
    except httpx.HTTPError as exc:
        return {**row, "error": {"status": None, "code": type(exc).__name__, "detail": str(exc) or repr(exc)}}


async def classify_paths(
    paths: list[Path], client: Client, output: Output, concurrency: int, explain_dir: Path | None, progress
) -> Tally:
    """Classify every image under ``paths`` not already in ``output``; ``progress(tally)`` after each."""
    tally = Tally()
    queue: asyncio.Queue[Path] = asyncio.Queue()
    for path, is_image in walk(paths):
        if not is_image:
            tally.skipped += 1
        elif str(path) in output.done:
            tally.resumed += 1
        else:
            queue.put_nowait(path)
    tally.total = queue.qsize()
    progress(tally)

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            path = queue.get_nowait()
            row = await classify_one(client, http, path, paths, explain_dir, tally)
            output.write(row)
            tally.count(row)
            progress(tally)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as http:
        await asyncio.gather(*(worker(http) for _ in range(max(1, concurrency))))
    return tally
