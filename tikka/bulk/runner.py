"""One `bulk_classify` task: every image of an archive or a gs:// prefix, one row each, in the
row format of `tikka classify` (``file`` and ``predictions`` and ``model``, or ``error``). A
failed image is a row, never a failed task; its progress is visible while it runs."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

import anyio

from tikka import metrics
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
