"""One `bulk_classify` task: every image of an archive or a gs:// prefix, one row each, in the
row format of `tikka classify` (``file`` and ``predictions`` and ``model``, or ``error``). A
failed image is a row, never a failed task; its progress is visible while it runs."""

from __future__ import annotations

import functools
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

import anyio

from tikka import metrics
from tikka.bulk.archives import Archive, ArchiveLimits
from tikka.bulk.gcs import Bucket, Source, check_request
from tikka.errors import ServiceError

Item = TypeVar("Item")


@dataclass
class Progress:
    source: str
    total: int = 0
    done: int = 0  # classified or failed
    failed: int = 0
    skipped: int = 0  # not images: folders aside, files with other endings, macOS metadata
    state: Literal["queued", "running", "completed", "failed"] = "queued"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ProgressBoard:
    """The progress of the last ``keep`` tasks of this gateway, by BentoML's task ID."""

    def __init__(self, keep: int = 256) -> None:
        self.keep = keep
        self.tasks: OrderedDict[str, Progress] = OrderedDict()

    def start(self, task_id: str | None, source: str) -> Progress:
        progress = Progress(source)
        if task_id:  # the synchronous route has none: nobody could ask
            self.tasks[task_id] = progress
            while len(self.tasks) > self.keep:
                self.tasks.popitem(last=False)
        return progress

    def get(self, task_id: str) -> Progress | None:
        return self.tasks.get(task_id)


@dataclass(frozen=True)
class BulkLimits:
    max_images: int  # members of an archive (all of them), or images under a prefix
    member_bytes: int  # one member or object
    storage_timeout_s: float  # one Cloud Storage call

    @classmethod
    def of(cls, settings: Any) -> BulkLimits:
        return cls(settings.bulk_max_images, settings.bulk_member_bytes, settings.bulk_storage_timeout_s)


async def run_task(
    archive: bytes | None,
    source: str | None,
    limits: BulkLimits,
    classify: Callable[[str, bytes], Awaitable[dict[str, Any]]],
    progress: Progress,
    wait_turn: Callable[[], Awaitable[None]],
) -> str:
    """The rows of an archive's images, or of the images under a gs:// source (also written
    back beside them), or the ServiceError that refuses the task whole."""
    check_request(archive is not None, source)  # as the upload guard did; a backstop in-process
    if archive is not None:
        opened = await anyio.to_thread.run_sync(Archive, archive, ArchiveLimits(limits.max_images, limits.member_bytes))
        progress.skipped = opened.skipped
        return await classify_all(opened.images, lambda member: member.name, opened.read, classify, progress, wait_turn)
    bucket = await anyio.to_thread.run_sync(Bucket, Source.parse(source), limits.storage_timeout_s)
    blobs, progress.skipped = await anyio.to_thread.run_sync(bucket.images, limits.max_images)
    rows = await classify_all(
        blobs,
        lambda blob: f"gs://{bucket.source.bucket}/{blob.name}",
        functools.partial(bucket.read, max_bytes=limits.member_bytes),
        classify,
        progress,
        wait_turn,
    )
    await anyio.to_thread.run_sync(bucket.write_result, rows)
    return rows


def error_row(file: str, exc: ServiceError) -> dict[str, Any]:
    return {"file": file, "error": {"status": exc.status_code, "code": exc.error, "detail": exc.detail}}


async def classify_all(
    items: list[Item],
    name_of: Callable[[Item], str],
    read: Callable[[Item], bytes],
    classify: Callable[[str, bytes], Awaitable[dict[str, Any]]],
    progress: Progress,
    wait_turn: Callable[[], Awaitable[None]],
) -> str:
    """The rows as JSON Lines. ``read`` (blocking: a worker thread) gives an item's bytes,
    ``classify`` its row's fields; ``wait_turn`` runs before each image (the live path's gap)."""
    progress.total = len(items)
    lines = []
    for item in items:
        await wait_turn()
        name = name_of(item)
        try:
            data = await anyio.to_thread.run_sync(read, item)
            row = {"file": name, **await classify(name, data)}
            metrics.BULK_IMAGES.labels(outcome="classified").inc()
        except ServiceError as exc:
            row = error_row(name, exc)
            progress.failed += 1
            metrics.BULK_IMAGES.labels(outcome="failed").inc()
        progress.done += 1
        lines.append(json.dumps(row) + "\n")
    progress.state = "completed"
    return "".join(lines)
