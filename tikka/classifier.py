"""Model loading, device choice, batched inference and top-k.

No HTTP in here: the classifier is usable (and tested) on its own.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)


def select_device(preference: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU, unless the settings name one."""
    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def config_labels(config) -> list[str]:
    """Class names from the checkpoint's own id2label, in index order."""
    return [config.id2label[i] for i in range(len(config.id2label))]


def checkpoint_config(model_path: str | Path):
    """The checkpoint's config alone, without loading weights (for the gateway)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(model_path))


class ImageClassifier:
    """An ``AutoModelForImageClassification`` checkpoint, loaded once, frozen."""

    def __init__(self, model_path: str | Path, device: str = "auto"):
        from transformers import AutoModelForImageClassification

        self.device = select_device(device)
        self.model = AutoModelForImageClassification.from_pretrained(str(model_path))
        self.model.eval().requires_grad_(False).to(self.device)
        self.labels = config_labels(self.model.config)
        self.explain_model = self._load_explain_model(model_path)
        logger.info(
            "loaded %s (%d classes) on %s", type(self.model).__name__, len(self.labels), self.device
        )

    def _load_explain_model(self, model_path: str | Path):
        """The model explanations run on.

        Only eager attention returns attention weights, and switching the shared
        model's implementation per request would race with /predict. So
        transformers get a second, eager copy, set once at load (memory: one
        more copy of the weights); Grad-CAM needs no attentions and shares the model.
        """
        from transformers import AutoModelForImageClassification

        from tikka.explain import explain_method

        if explain_method(self.model.config) != "attention-rollout":
            return self.model
        eager = AutoModelForImageClassification.from_pretrained(
            str(model_path), attn_implementation="eager"
        )
        return eager.eval().requires_grad_(False).to(self.device)

    def predict_proba(self, pixel_values: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 -> (N, num_classes) softmax probabilities."""
        batch = torch.from_numpy(np.ascontiguousarray(pixel_values, dtype=np.float32))
        with torch.inference_mode():
            logits = self.model(pixel_values=batch.to(self.device)).logits
            return logits.float().softmax(dim=-1).cpu().numpy()

    def input_shape(self) -> tuple[int, int, int]:
        config = self.model.config
        if getattr(config, "pretrained_cfg", None):  # timm wrapper
            return tuple(config.pretrained_cfg["input_size"])
        vision = getattr(config, "vision_config", config)
        size = vision.image_size
        return (3, size, size) if isinstance(size, int) else (3, *size)

    def warm_up(self) -> None:
        """One real inference, so the first request does not pay for lazy initialisation."""
        self.predict_proba(np.zeros((1, *self.input_shape()), dtype=np.float32))


def top_k_labels(probabilities: np.ndarray, labels: list[str], k: int) -> dict[str, float]:
    """The k most probable labels, highest first, probabilities rounded to 3 decimals."""
    k = min(k, len(labels))
    order = np.argsort(-probabilities, kind="stable")[:k]
    return {labels[i]: round(float(probabilities[i]), 3) for i in order}
