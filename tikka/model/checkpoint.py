"""A checkpoint directory, read once: what every part of the service needs to know about it.

The gateway (input geometry, labels, explanation method), the runtimes, the ONNX export
and the import all read a checkpoint through this type, from its JSON files alone: no
transformers, no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tikka.model.explain import explain_method
from tikka.model.imaging import InputSpec

ONNX_FILE = "model.onnx"  # written by tikka/tools/export.py beside the checkpoint
# Written by tikka/tools/quantize.py: the int8 graph (OpenVINO IR, kept only if it passed
# the agreement gate) and the gate's figures for each reduced precision.
INT8_FILE = "model_int8.xml"
GATE_FILE = "precision_gate.json"


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    config: dict  # config.json, as plain JSON
    labels: list[str]  # class names in index order
    model_type: str | None
    input_spec: InputSpec

    @classmethod
    def read(cls, path: str | Path) -> Checkpoint:
        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        processor_file = path / "preprocessor_config.json"
        processor = json.loads(processor_file.read_text()) if processor_file.exists() else None
        return cls(
            path=path,
            config=config,
            labels=labels_of(config),
            # timm's save_for_hf writes no model_type (AutoConfig knows it by pretrained_cfg).
            model_type=config.get("model_type") or ("timm_wrapper" if "pretrained_cfg" in config else None),
            input_spec=InputSpec.from_configs(config, processor),
        )

    @property
    def explain_method(self) -> str | None:
        return explain_method(self.model_type)


def labels_of(config: dict) -> list[str]:
    """Class names in index order, from id2label (or timm's label_names)."""
    if config.get("id2label"):
        return [config["id2label"][key] for key in sorted(config["id2label"], key=int)]
    return list(config["label_names"])
