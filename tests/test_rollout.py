"""Unit tests: attention rollout on known answers, token layouts, and real tiny transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import SiglipVisionConfig, ViTConfig

from tests.tiny_models import save_tiny_siglip, save_tiny_vit
from tikka.classifier import ImageClassifier
from tikka.explain import (
    TokenLayout,
    UnsupportedModelError,
    attention_rollout,
    explain,
    normalise,
    rollout_heatmap,
    token_layout,
)

SIGLIP = TokenLayout((3, 3), 0, "mean")
VIT = TokenLayout((3, 3), 1, "cls")


def identity_layers(tokens: int, layers: int = 3, heads: int = 2) -> list[torch.Tensor]:
    return [torch.eye(tokens).expand(heads, tokens, tokens) for _ in range(layers)]


def test_identity_attention_gives_a_uniform_map_for_mean_pooled_models():
    heatmap = rollout_heatmap(attention_rollout(identity_layers(9)), SIGLIP)
    np.testing.assert_allclose(heatmap, np.full((3, 3), 1 / 9))


def test_uniform_attention_gives_a_uniform_map_for_cls_models():
    tokens = VIT.num_tokens
    uniform = [torch.full((2, tokens, tokens), 1 / tokens) for _ in range(4)]
    heatmap = rollout_heatmap(attention_rollout(uniform), VIT)
    assert np.ptp(heatmap) < 1e-12 and heatmap.shape == (3, 3)


def test_residual_is_mixed_half_and_half_with_the_identity():
    tokens = 4
    everyone_looks_at_token_2 = torch.zeros(1, tokens, tokens)
    everyone_looks_at_token_2[..., 2] = 1.0
    rollout = attention_rollout([everyone_looks_at_token_2])
    expected = 0.5 * torch.eye(tokens, dtype=torch.float64)
    expected[:, 2] += 0.5
    torch.testing.assert_close(rollout, expected)


@pytest.mark.parametrize("layout", [SIGLIP, VIT])
def test_attention_on_one_patch_puts_the_peak_there(layout):
    tokens = layout.num_tokens
    target = layout.prefix_tokens + 5  # patch (1, 2) of the 3x3 grid
    attention = torch.zeros(2, tokens, tokens)
    attention[..., target] = 1.0
    heatmap = normalise(rollout_heatmap(attention_rollout([attention] * 3), layout))
    assert np.unravel_index(heatmap.argmax(), heatmap.shape) == (1, 2)


def test_head_fusion_is_the_mean_over_heads():
    tokens = 3
    heads = torch.stack([torch.eye(tokens), torch.full((tokens, tokens), 1 / tokens)])
    rollout = attention_rollout([heads], residual=0.0)
    torch.testing.assert_close(rollout, heads.double().mean(0))


@pytest.mark.parametrize(
    ("config", "grid", "prefix"),
    [
        (ViTConfig(image_size=224, patch_size=16), (14, 14), 1),
        (ViTConfig(image_size=384, patch_size=32), (12, 12), 1),
    ],
)
def test_vit_grid_comes_from_the_config(config, grid, prefix):
    layout = token_layout(config)
    assert layout.grid == grid and layout.prefix_tokens == prefix and layout.readout == "cls"


def test_siglip_uses_every_token_on_the_config_grid():
    from transformers import SiglipConfig

    config = SiglipConfig(vision_config=SiglipVisionConfig(image_size=224, patch_size=16).to_dict())
    layout = token_layout(config)
    assert layout.grid == (14, 14) and layout.prefix_tokens == 0 and layout.num_tokens == 196


@pytest.fixture(scope="module", params=["vit", "siglip"])
def tiny(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    if request.param == "vit":
        save_tiny_vit(directory, layers=2, heads=2)
    else:
        save_tiny_siglip(directory, layers=3, heads=4)
    return request.param, ImageClassifier(directory, "cpu")


def test_rollout_on_real_tiny_transformers(tiny):
    family, classifier = tiny
    pixel_values = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    result = explain(classifier.explain_model, pixel_values)
    assert result.method == "attention-rollout" and result.grid_size == "14x14"
    expected = (2, 2) if family == "vit" else (3, 4)
    assert (result.num_layers, result.num_heads) == expected
    assert result.heatmap.min() >= 0 and result.heatmap.max() == pytest.approx(1.0)
    probabilities = classifier.predict_proba(pixel_values.numpy())[0]
    assert result.class_index == int(probabilities.argmax())
    assert result.confidence == pytest.approx(float(probabilities.max()), abs=1e-4)


def test_explanations_use_a_separate_eager_copy(tiny):
    _, classifier = tiny
    assert classifier.explain_model is not classifier.model
    assert classifier.model.config._attn_implementation != "eager"
    assert classifier.explain_model.config._attn_implementation == "eager"
    pixel_values = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    before = classifier.predict_proba(pixel_values)
    explain(classifier.explain_model, torch.from_numpy(pixel_values))
    np.testing.assert_allclose(classifier.predict_proba(pixel_values), before, atol=1e-6)
    assert classifier.model.config._attn_implementation != "eager"


def test_a_token_count_that_disagrees_with_the_config_is_an_error(tiny, monkeypatch):
    """The grid is never guessed from the token count: a config that disagrees is refused."""
    _, classifier = tiny
    config = classifier.explain_model.config
    vision = getattr(config, "vision_config", config)
    monkeypatch.setattr(vision, "patch_size", 32)  # the layout now expects 7x7
    with pytest.raises(UnsupportedModelError, match="196 tokens|197 tokens"):
        explain(classifier.explain_model, torch.randn(1, 3, 224, 224))


def test_architectures_without_a_method_are_reported_as_such():
    from transformers import ConvNextConfig, SiglipConfig

    from tikka.explain import explain_method

    assert explain_method(ConvNextConfig()) is None
    assert explain_method(ViTConfig()) == "attention-rollout"
    assert explain_method(SiglipConfig()) == "attention-rollout"
