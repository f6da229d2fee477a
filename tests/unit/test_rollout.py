"""Unit tests: attention rollout on known answers, token layouts, and real tiny transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import SiglipVisionConfig, ViTConfig

from tests.tiny_models import save_tiny_siglip, save_tiny_vit
from tikka.model.checkpoint import Checkpoint
from tikka.model.explain import (
    TokenLayout,
    UnsupportedModelError,
    attention_rollout,
    explain,
    normalise,
    rollout_heatmap,
    token_layout,
)
from tikka.model.runtime import TorchClassifier, load_classifier

SIGLIP = TokenLayout((3, 3), 0, "mean")
VIT = TokenLayout((3, 3), 1, "cls")


def identity_layers(tokens: int, layers: int = 3, heads: int = 2) -> list[torch.Tensor]:
    return [torch.eye(tokens).expand(1, heads, tokens, tokens) for _ in range(layers)]


def heatmap_of(attentions, layout) -> np.ndarray:
    """Rollout of one image's per-layer (heads, tokens, tokens) attentions, as a grid."""
    return rollout_heatmap(attention_rollout([layer[None] for layer in attentions]), layout)[0].numpy()


def test_identity_attention_gives_a_uniform_map_for_mean_pooled_models():
    heatmap = rollout_heatmap(attention_rollout(identity_layers(9)), SIGLIP)[0].numpy()
    np.testing.assert_allclose(heatmap, np.full((3, 3), 1 / 9))


def test_uniform_attention_gives_a_uniform_map_for_cls_models():
    tokens = VIT.num_tokens
    uniform = [torch.full((2, tokens, tokens), 1 / tokens) for _ in range(4)]
    heatmap = heatmap_of(uniform, VIT)
    assert np.ptp(heatmap) < 1e-12 and heatmap.shape == (3, 3)


def test_rollout_of_a_batch_is_the_rollout_of_each_image():
    generator = torch.Generator().manual_seed(0)
    batch = [torch.rand(3, 2, 10, 10, generator=generator).softmax(-1) for _ in range(2)]
    together = rollout_heatmap(attention_rollout(batch), VIT).numpy()
    for i in range(3):
        np.testing.assert_allclose(together[i], heatmap_of([layer[i] for layer in batch], VIT))


def test_residual_is_mixed_half_and_half_with_the_identity():
    tokens = 4
    everyone_looks_at_token_2 = torch.zeros(1, 1, tokens, tokens)
    everyone_looks_at_token_2[..., 2] = 1.0
    rollout = attention_rollout([everyone_looks_at_token_2])[0]
    expected = 0.5 * torch.eye(tokens, dtype=torch.float64)
    expected[:, 2] += 0.5
    torch.testing.assert_close(rollout, expected)


@pytest.mark.parametrize("layout", [SIGLIP, VIT])
def test_attention_on_one_patch_puts_the_peak_there(layout):
    tokens = layout.num_tokens
    target = layout.prefix_tokens + 5  # patch (1, 2) of the 3x3 grid
    attention = torch.zeros(2, tokens, tokens)
    attention[..., target] = 1.0
    heatmap = normalise(heatmap_of([attention] * 3, layout))
    assert np.unravel_index(heatmap.argmax(), heatmap.shape) == (1, 2)


def test_head_fusion_is_the_mean_over_heads():
    tokens = 3
    heads = torch.stack([torch.eye(tokens), torch.full((tokens, tokens), 1 / tokens)])
    rollout = attention_rollout([heads[None]], residual=0.0)[0]
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
    return request.param, TorchClassifier(directory, "cpu")


def random_pixels(seed: int = 0, count: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 224, 224, 3), dtype=np.uint8)


def test_rollout_on_real_tiny_transformers(tiny):
    family, classifier = tiny
    pixels = random_pixels()
    result = classifier.explain(pixels)
    assert result.method == "attention-rollout" and result.grid_size == "14x14"
    expected = (2, 2) if family == "vit" else (3, 4)
    assert (result.num_layers, result.num_heads) == expected
    assert result.heatmap.min() >= 0 and result.heatmap.max() == pytest.approx(1.0)
    probabilities = classifier.predict_proba(pixels)[0]
    assert result.class_index == int(probabilities.argmax())
    assert result.confidence == pytest.approx(float(probabilities.max()), abs=1e-4)


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_exported_transformers_classify_and_roll_out_as_torch_does(tiny, tmp_path, runtime):
    """The graph carries the rollout: the served runtime explains without torch, with torch's answers."""
    import shutil

    from tikka.tools.export import export_onnx

    family, reference = tiny
    directory = tmp_path / family
    shutil.copytree(reference.model_path, directory)
    assert export_onnx(directory) == directory / "model.onnx"
    served = load_classifier(directory, runtime, "cpu")
    assert served.runtime == runtime and "explanation" in served.outputs
    pixels = random_pixels(1, count=4)
    np.testing.assert_allclose(served.predict_proba(pixels), reference.predict_proba(pixels), atol=1e-3)
    ours, theirs = served.explain(pixels[:1]), reference.explain(pixels[:1])
    assert (ours.class_index, ours.num_layers, ours.num_heads) == (
        theirs.class_index,
        theirs.num_layers,
        theirs.num_heads,
    )
    assert np.abs(ours.heatmap - theirs.heatmap).max() < 1e-3


def test_lean_preprocessing_gives_the_processor_answers(tiny):
    """uint8 pixels from PIL + normalisation in the batch = the checkpoint's own processor."""
    from transformers import AutoImageProcessor

    from tests import helpers

    _, classifier = tiny
    processor = AutoImageProcessor.from_pretrained(str(classifier.model_path))
    spec = Checkpoint.read(classifier.model_path).input_spec
    for name in ("pizza.jpg", "guacamole.jpg", "hamburger.jpg"):
        image = helpers.photo_image(name)
        stock = processor(images=image, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            expected = classifier.model(pixel_values=stock).logits.softmax(-1).numpy()
        ours = classifier.predict_proba(spec.preprocess(image)[None])
        assert ours.argmax() == expected.argmax() and np.abs(ours - expected).max() < 1e-3


def test_explanations_use_a_separate_eager_copy(tiny):
    _, classifier = tiny
    assert classifier.explain_model is not classifier.model
    assert classifier.model.config._attn_implementation != "eager"
    assert classifier.explain_model.config._attn_implementation == "eager"
    pixels = random_pixels()
    before = classifier.predict_proba(pixels)
    classifier.explain(pixels)
    np.testing.assert_allclose(classifier.predict_proba(pixels), before, atol=1e-6)
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

    from tikka.model.explain import explain_method

    assert explain_method(ConvNextConfig().model_type) is None
    assert explain_method(ViTConfig().model_type) == "attention-rollout"
    assert explain_method(SiglipConfig().model_type) == "attention-rollout"
