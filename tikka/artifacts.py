"""Putting checkpoint directories into the BentoML model store, atomically.

The service only ever reads the store; scripts in ``models/`` write to it. A
checkpoint is a transformers image-classification directory (``config.json`` +
weights) that ``AutoModelForImageClassification`` can load.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


class CheckpointError(Exception):
    """The directory is not a loadable image-classification checkpoint."""


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def validate_checkpoint_dir(directory: Path) -> dict[str, Any]:
    """Check the files a checkpoint needs before anything touches the store; return its config."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{directory} has no config.json: it is not a transformers checkpoint")
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        raise CheckpointError(
            f"{directory} has no weights: expected one of {', '.join(WEIGHT_FILES)}"
        )
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_path} is not valid JSON: {exc}") from exc
    labels = config.get("id2label") or {}
    if not labels and not config.get("label_names"):
        raise CheckpointError(f"{config_path} has no id2label: the service needs the class names")
    return config


def checkpoint_labels(config: dict[str, Any]) -> list[str]:
    if config.get("id2label"):
        return [config["id2label"][key] for key in sorted(config["id2label"], key=int)]
    return list(config["label_names"])  # timm's save_for_hf writes label_names


def find_model(tag: str) -> bentoml.Model | None:
    try:
        return bentoml.models.get(tag)
    except NotFound:
        return None


def import_checkpoint(
    tag: str,
    write_checkpoint: Callable[[Path], None],
    metadata: dict[str, Any],
) -> bentoml.Model:
    """Create model ``tag`` from the files ``write_checkpoint`` puts into the given directory.

    ``bentoml.models.create`` builds the model in a temporary directory and only
    moves it into the store when the block exits cleanly, so a failure here
    never leaves a half-written model, and never touches an existing version.
    """
    with bentoml.models.create(
        tag,
        module="transformers",
        labels={"task": "image-classification"},
        metadata=metadata,
    ) as model:
        target = Path(model.path)
        write_checkpoint(target)
        config = validate_checkpoint_dir(target)
        labels = checkpoint_labels(config)
        model.info.metadata.update(
            {
                "labels": labels,
                "num_labels": len(labels),
                "architecture": (config.get("architectures") or [config.get("architecture", "unknown")])[0],
                "files_sha256": {
                    p.name: sha256_file(p) for p in sorted(target.iterdir()) if p.is_file()
                },
            }
        )
    return bentoml.models.get(model.tag)


def copy_checkpoint_dir(source: Path) -> Callable[[Path], None]:
    def write(target: Path) -> None:
        for item in source.iterdir():
            if item.is_file():
                shutil.copy2(item, target / item.name)

    return write
