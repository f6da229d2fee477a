"""Where the model looked: Grad-CAM for CNNs, attention rollout for vision transformers.

Attention rollout (Abnar & Zuidema, 2020), as done here:

- head fusion: the mean over heads of each layer's attention matrix;
- residual: each layer's fused matrix is mixed half and half with the identity,
  ``0.5 * A + 0.5 * I`` (the skip connection carries the token itself), then
  rows are renormalised to sum to 1;
- the layers' matrices are multiplied from the first layer to the last.

The map is then read out the way the classifier reads its tokens: ViT
classifies from the CLS token, so its map is the CLS row over the patch tokens
(CLS itself dropped); SigLIP's classifier mean-pools every token (there is no
CLS), so its map is the mean of all rows. The token grid always comes from the
config (``image_size // patch_size``); a token count that does not match it is
an error, never a guess.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from tikka.model.imaging import ViewBox

OVERLAY_MAX_SIDE = 1024
OVERLAY_ALPHA = 0.45


@dataclass(frozen=True)
class Explanation:
    heatmap: np.ndarray  # (grid_h, grid_w), scaled to [0, 1]
    class_index: int
    confidence: float
    method: str
    num_layers: int
    num_heads: int

    @classmethod
    def of(
        cls, probabilities: np.ndarray, heatmap: np.ndarray, method: str, num_layers: int, num_heads: int
    ) -> Explanation:
        """The one way an explanation is made, whatever computed it: the top class and its
        probability from one image's ``probabilities``, the ``heatmap`` scaled to [0, 1]."""
        class_index = int(np.argmax(probabilities))
        return cls(
            heatmap=normalise(np.asarray(heatmap)),
            class_index=class_index,
            confidence=float(probabilities[class_index]),
            method=method,
            num_layers=num_layers,
            num_heads=num_heads,
        )

    @property
    def grid_size(self) -> str:
        height, width = self.heatmap.shape
        return f"{height}x{width}"


class UnsupportedModelError(Exception):
    """The checkpoint has no explanation method here."""


@dataclass(frozen=True)
class TokenLayout:
    """How a vision transformer lays out its tokens, and how its classifier reads them."""

    grid: tuple[int, int]
    prefix_tokens: int  # special tokens before the patches (CLS, distillation)
    readout: Literal["cls", "mean"]

    @property
    def num_tokens(self) -> int:
        return self.prefix_tokens + self.grid[0] * self.grid[1]


# model_type -> (prefix tokens, readout). Families are listed, not inferred.
ATTENTION_FAMILIES: dict[str, tuple[int, Literal["cls", "mean"]]] = {
    "vit": (1, "cls"),
    "deit": (2, "cls"),
    "siglip": (0, "mean"),
}


def explain_method(model_type: str | None) -> str | None:
    """'grad-cam', 'attention-rollout', or None when this model type cannot be explained here."""
    if model_type == "timm_wrapper":
        return "grad-cam"
    if model_type in ATTENTION_FAMILIES:
        return "attention-rollout"
    return None


def vision_config(config: dict) -> dict:
    """The vision part of a checkpoint's config.json (SigLIP nests it)."""
    return config.get("vision_config") or config


def attention_shape(config: dict) -> tuple[int, int]:
    """(layers, heads) that attention rollout fuses, from config.json."""
    vision = vision_config(config)
    return int(vision.get("num_hidden_layers", 12)), int(vision.get("num_attention_heads", 12))


def token_layout(config) -> TokenLayout:
    """From a transformers config object or its config.json as a dict."""
    if not isinstance(config, dict):
        config = config.to_dict()
    prefix, readout = ATTENTION_FAMILIES[config["model_type"]]
    vision = vision_config(config)
    image_h, image_w = _pair(vision.get("image_size", 224))
    patch_h, patch_w = _pair(vision.get("patch_size", 16))
    return TokenLayout((image_h // patch_h, image_w // patch_w), prefix, readout)


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def explain(model, pixel_values) -> Explanation:
    """Explain the top-1 class of one image (1, 3, H, W) with torch.

    For transformers, ``model`` must use eager attention (only it returns
    attention weights): the classifier keeps a separate eager copy for this.
    """
    method = explain_method(model.config.model_type)
    if method == "grad-cam":
        return grad_cam(model.timm_model, pixel_values)
    if method == "attention-rollout":
        return explain_with_attention(model, pixel_values)
    raise UnsupportedModelError(f"no explanation method for {type(model).__name__}")


def explain_with_attention(model, pixel_values) -> Explanation:
    import torch

    layout = token_layout(model.config)
    with torch.inference_mode():
        outputs = model(pixel_values=pixel_values, output_attentions=True)
    if not outputs.attentions:
        raise UnsupportedModelError("the model returned no attentions (is attention eager?)")
    attentions = [layer.float() for layer in outputs.attentions]
    tokens = attentions[0].shape[-1]
    if tokens != layout.num_tokens:
        raise UnsupportedModelError(
            f"{tokens} tokens, but the config implies {layout.num_tokens}"
            f" ({layout.prefix_tokens} + {layout.grid[0]}x{layout.grid[1]})"
        )
    heatmap = rollout_heatmap(attention_rollout(attentions), layout)[0]
    probabilities = outputs.logits[0].float().softmax(dim=-1).numpy()
    return Explanation.of(probabilities, heatmap.numpy(), "attention-rollout", len(attentions), attentions[0].shape[1])


def attention_rollout(attentions: Sequence, residual: float = 0.5):
    """Per-layer (N, heads, tokens, tokens) attention tensors -> (N, tokens, tokens) rollout.

    Torch operations only, so that the ONNX export (tikka/tools/export.py) traces the
    very same arithmetic into the served graph.
    """
    import torch

    tokens = attentions[0].shape[-1]
    identity = torch.eye(tokens, dtype=torch.float64)
    rollout = identity.expand(attentions[0].shape[0], tokens, tokens)
    for layer in attentions:
        fused = layer.double().mean(dim=1)
        mixed = residual * identity + (1 - residual) * fused
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed @ rollout
    return rollout


def rollout_heatmap(rollout, layout: TokenLayout):
    """(N, tokens, tokens) rollout -> (N, grid_h, grid_w) relevance of each patch."""
    patches = slice(layout.prefix_tokens, layout.num_tokens)
    if layout.readout == "cls":
        relevance = rollout[:, 0, patches]
    else:
        relevance = rollout[:, patches, patches].mean(dim=1)
    return relevance.reshape(-1, *layout.grid)


def grad_cam(timm_model, pixel_values) -> Explanation:
    """Grad-CAM (Selvaraju et al. 2017) on the last convolutional stage of a timm CNN.

    The weights are frozen, so gradients flow only into a detached copy of the
    feature map: thread-safe beside concurrent inference on the same model.
    """
    import torch

    with torch.no_grad():
        features = timm_model.forward_features(pixel_values)
    if features.ndim != 4:
        raise UnsupportedModelError("Grad-CAM needs a (N, C, H, W) feature map")
    features = features.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = timm_model.forward_head(features)
        probabilities = logits.detach().softmax(dim=-1)[0]
        class_index = int(probabilities.argmax())
        (gradients,) = torch.autograd.grad(logits[0, class_index], features)
    channel_weights = gradients[0].mean(dim=(1, 2))
    cam = torch.relu((channel_weights[:, None, None] * features[0].detach()).sum(dim=0))
    return Explanation.of(probabilities.numpy(), cam.numpy(), "grad-cam", num_layers=1, num_heads=0)


def normalise(heatmap: np.ndarray) -> np.ndarray:
    heatmap = heatmap.astype(np.float32) - float(heatmap.min())
    peak = float(heatmap.max())
    return heatmap / peak if peak > 0 else heatmap


def jet(values: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB uint8 with the classic jet ramp (blue, cyan, yellow, red).

    Written out because it is three lines, where matplotlib would add tens of
    megabytes to the image for one colormap.
    """
    channels = [np.clip(1.5 - np.abs(4 * values - offset), 0, 1) for offset in (3, 2, 1)]
    return (np.stack(channels, axis=-1) * 255).astype(np.uint8)


@dataclass(frozen=True)
class Overlay:
    blended_png: bytes  # the heatmap over the image
    heatmap_png: bytes  # the coloured heatmap alone, same size, for client-side blending


def render_overlay(image: Image.Image, heatmap: np.ndarray, box: ViewBox) -> Overlay:
    """PNGs of the heatmap (alone, and blended over the image) at the upload's proportions.

    The grid is stretched over the part of the image the model saw (``box``,
    the processor's crop), so each cell lands where its pixels came from.
    """
    width, height = image.size
    scale = min(1.0, OVERLAY_MAX_SIDE / max(width, height))
    out_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    base = image.convert("RGB").resize(out_size, Image.Resampling.BILINEAR)

    left, top = round(box.left * scale), round(box.top * scale)
    box_size = (
        max(1, round(box.right * scale) - left),
        max(1, round(box.bottom * scale) - top),
    )
    cells = Image.fromarray(heatmap.astype(np.float32), mode="F")
    canvas = np.zeros((out_size[1], out_size[0]), dtype=np.float32)
    stretched = np.asarray(cells.resize(box_size, Image.Resampling.BILINEAR))
    canvas[top : top + box_size[1], left : left + box_size[0]] = stretched[: out_size[1] - top, : out_size[0] - left]
    coloured = Image.fromarray(jet(np.clip(canvas, 0, 1)), mode="RGB")
    return Overlay(
        blended_png=png_bytes(Image.blend(base, coloured, OVERLAY_ALPHA)),
        heatmap_png=png_bytes(coloured),
    )


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
