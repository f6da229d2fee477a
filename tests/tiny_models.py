"""Tiny random ViT and SigLIP image classifiers, built offline from their configs.

Real architectures and real processors at toy width, so that the loading,
serving and attention-rollout code paths are the ones a full-size checkpoint
takes. Predictions are random; the geometry (224 px, 16 px patches, 14x14) is real.
"""

from __future__ import annotations

from pathlib import Path

LABELS = ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "huevos_rancheros", "pizza"]


def label_maps() -> dict:
    return {"id2label": dict(enumerate(LABELS)), "label2id": {l: i for i, l in enumerate(LABELS)}}


def save_tiny_vit(directory: Path, layers: int = 2, heads: int = 2) -> Path:
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=224,
        patch_size=16,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=64,
        **label_maps(),
    )
    ViTForImageClassification(config).save_pretrained(directory)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(directory)
    return directory


def save_tiny_siglip(directory: Path, layers: int = 2, heads: int = 2) -> Path:
    """The production architecture's builder (models/build_production_architecture.py) at toy width."""
    from models.build_production_architecture import save_checkpoint

    vision = {
        "image_size": 224,
        "patch_size": 16,
        "hidden_size": 32,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": 64,
    }
    return save_checkpoint(directory, vision, LABELS)
