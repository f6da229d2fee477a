"""ONNX export of a classifier checkpoint, done once when a model is put into the store.

The exported graph takes what the gateway ships, ``pixels``: uint8 (N, H, W, 3),
already resized and cropped. It applies the checkpoint's own normalisation
inside the graph (once per batch, in the runtime), then the model. Outputs:

- ``logits`` (N, classes);
- ``explanation`` (N, h, w), where the architecture has one:
  - a CNN whose head is global average pooling then one linear layer: the class
    activation map of the top-1 class. For such a head Grad-CAM's channel
    weights are the linear weights divided by h*w, so CAM equals Grad-CAM once
    normalised, and needs no gradients;
  - ViT, DeiT, SigLIP: attention rollout over the patch grid
    (``tikka.model.explain.attention_rollout``, traced into the graph).

Torch is needed here (the scripts in ``models/``), never by the served graph.
The export is checked against torch before it is kept; a checkpoint that does
not export, or whose export disagrees, is stored without ``model.onnx`` and
served with torch (the service logs which).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tikka.model.checkpoint import ONNX_FILE, Checkpoint
from tikka.model.imaging import InputSpec
from tikka.model.runtime import normalisation

logger = logging.getLogger(__name__)

OPSET = 18
# Bump when the graph's inputs, outputs or recipe change: model versions include it.
# 2: the int8 graph and the precision gate beside it (tikka/tools/quantize.py).
# 3: the gate records the architecture it measured on (reduced precisions are offered there only).
EXPORT_VERSION = "3"
# Largest logit difference from torch that still counts as the same model (fp32).
MAX_LOGIT_DIFFERENCE = 1e-3


class ExportError(Exception):
    """The checkpoint cannot be exported, or its export does not match torch."""


def _graph_module(model, spec: InputSpec):
    """The torch module that is exported: normalise, classify, explain."""
    import torch

    from tikka.model.explain import attention_rollout, explain_method, rollout_heatmap, token_layout

    scale, offset = normalisation(spec)
    method = explain_method(model.config.model_type)

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("scale", scale)
            self.register_buffer("offset", offset)

        def normalise(self, pixels):
            return pixels.permute(0, 3, 1, 2).float() * self.scale + self.offset

    if method == "grad-cam" and has_cam_head(model.timm_model):
        timm_model = model.timm_model

        class CamGraph(Graph):
            def forward(self, pixels):
                features = timm_model.forward_features(self.normalise(pixels))
                logits = timm_model.forward_head(features)
                weights = timm_model.get_classifier().weight[logits.argmax(dim=1)]
                return logits, torch.einsum("nc,nchw->nhw", weights, features).relu()

        return CamGraph(), ["logits", "explanation"]

    if method == "attention-rollout":
        layout = token_layout(model.config)

        class RolloutGraph(Graph):
            def forward(self, pixels):
                outputs = self.model(pixel_values=self.normalise(pixels), output_attentions=True)
                rollout = attention_rollout(outputs.attentions)
                return outputs.logits, rollout_heatmap(rollout, layout).float()

        return RolloutGraph(), ["logits", "explanation"]

    class LogitsGraph(Graph):
        def forward(self, pixels):
            return self.model(pixel_values=self.normalise(pixels)).logits

    return LogitsGraph(), ["logits"]


def has_cam_head(timm_model) -> bool:
    """Global average pooling straight into one linear layer (CAM = Grad-CAM)."""
    import torch

    pool = getattr(timm_model, "global_pool", None)
    return (
        getattr(pool, "pool_type", None) == "avg"
        and isinstance(timm_model.get_classifier(), torch.nn.Linear)
        and hasattr(timm_model, "forward_head")
    )


def load_for_export(model_path: Path):
    from transformers import AutoModelForImageClassification

    # Only eager attention returns attention weights (for rollout).
    eager = Checkpoint.read(model_path).explain_method == "attention-rollout"
    model = AutoModelForImageClassification.from_pretrained(
        str(model_path), **({"attn_implementation": "eager"} if eager else {})
    )
    return model.eval().requires_grad_(False)


def export_onnx(model_path: str | Path) -> Path | None:
    """Write ``model.onnx`` beside the checkpoint, checked against torch; None if it cannot be."""
    model_path = Path(model_path)
    target = model_path / ONNX_FILE
    try:
        _export(model_path, target)
    except Exception as exc:  # any exporter failure means the same thing: serve with torch
        target.unlink(missing_ok=True)
        logger.warning("no ONNX export for %s (%s); it will be served with torch", model_path.name, exc)
        return None
    return target


def _export(model_path: Path, target: Path) -> None:
    import torch

    spec = Checkpoint.read(model_path).input_spec
    model = load_for_export(model_path)
    graph, outputs = _graph_module(model, spec)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randint(0, 256, (2, spec.height, spec.width, 3), dtype=torch.uint8, generator=generator)
    with torch.inference_mode():
        expected = graph(sample)
    torch.onnx.export(
        graph,
        (sample,),
        str(target),
        input_names=["pixels"],
        output_names=outputs,
        dynamic_axes={name: {0: "batch"} for name in ["pixels", *outputs]},
        opset_version=OPSET,
        dynamo=False,
    )
    check_export(target, sample.numpy(), expected if isinstance(expected, tuple) else (expected,))


def check_export(target: Path, sample: np.ndarray, expected) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    actual = session.run(None, {"pixels": sample})
    for name, ours, theirs in zip((o.name for o in session.get_outputs()), actual, expected, strict=True):
        difference = float(np.abs(ours - theirs.numpy()).max())
        if difference > MAX_LOGIT_DIFFERENCE:
            raise ExportError(f"ONNX output {name} differs from torch by {difference:.2e}")
