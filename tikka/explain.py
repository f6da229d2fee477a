"""Where the model looked: Grad-CAM for CNNs, rendered as a heatmap over the upload."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from tikka.imaging import ViewBox

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

    @property
    def grid_size(self) -> str:
        height, width = self.heatmap.shape
        return f"{height}x{width}"


class UnsupportedModelError(Exception):
    """The checkpoint has no explanation method here."""


def explain(model, pixel_values: torch.Tensor) -> Explanation:
    """Explain the top-1 class of a single image (1, 3, H, W) for any supported model."""
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None and hasattr(timm_model, "forward_features"):
        return grad_cam(timm_model, pixel_values)
    raise UnsupportedModelError(f"no explanation method for {type(model).__name__}")


def grad_cam(timm_model, pixel_values: torch.Tensor) -> Explanation:
    """Grad-CAM (Selvaraju et al. 2017) on the last convolutional stage of a timm CNN.

    The weights are frozen, so gradients flow only into a detached copy of the
    feature map: thread-safe beside concurrent inference on the same model.
    """
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
    return Explanation(
        heatmap=normalise(cam.numpy()),
        class_index=class_index,
        confidence=float(probabilities[class_index]),
        method="grad-cam",
        num_layers=1,
        num_heads=0,
    )


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


def render_overlay(image: Image.Image, heatmap: np.ndarray, box: ViewBox) -> bytes:
    """PNG of the heatmap blended over the image, keeping the upload's proportions.

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
    canvas[top : top + box_size[1], left : left + box_size[0]] = stretched[
        : out_size[1] - top, : out_size[0] - left
    ]
    overlay = Image.fromarray(jet(np.clip(canvas, 0, 1)), mode="RGB")
    buffer = io.BytesIO()
    Image.blend(base, overlay, OVERLAY_ALPHA).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
