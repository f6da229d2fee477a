"""Grad-CAM on the real model: torch's, and the served graph's CAM, which must equal it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests import helpers
from tikka.model.checkpoint import Checkpoint
from tikka.model.runtime import load_classifier


@pytest.fixture(scope="module", params=["openvino", "torch"])
def model_and_preprocessor(default_model, request):
    return (
        load_classifier(default_model.path, request.param, "cpu", precision="fp32"),
        Checkpoint.read(default_model.path).input_spec,
    )


def explain_image(model_and_preprocessor, image: Image.Image):
    classifier, spec = model_and_preprocessor
    return classifier, classifier.explain(spec.preprocess(image)[None])


def test_grad_cam_uses_the_last_conv_stage_grid(model_and_preprocessor):
    classifier, result = explain_image(model_and_preprocessor, helpers.photo_image())
    assert result.method == "grad-cam"
    assert result.heatmap.shape == (7, 7) and result.grid_size == "7x7"
    assert result.heatmap.min() >= 0 and result.heatmap.max() == pytest.approx(1.0)
    assert classifier.labels[result.class_index] == "pizza" and result.confidence > 0.9
    assert (result.num_layers, result.num_heads) == (1, 0)


def test_grad_cam_points_at_the_food_not_the_blank_half(model_and_preprocessor):
    """A pizza on the left half of a white canvas: the map's mass must sit on the left."""
    pizza = helpers.photo_image().resize((224, 224))
    canvas = Image.new("RGB", (448, 224), (255, 255, 255))
    canvas.paste(pizza, (0, 0))
    # The processor centre-crops the short side, so feed a square-ish layout:
    # stack two canvases vertically to make the crop cover both halves.
    square = Image.new("RGB", (448, 448), (255, 255, 255))
    square.paste(canvas, (0, 0))
    square.paste(canvas, (0, 224))
    _, result = explain_image(model_and_preprocessor, square)
    left, right = result.heatmap[:, :3].sum(), result.heatmap[:, 4:].sum()
    assert left > 2 * right


def test_explaining_does_not_change_predictions(model_and_preprocessor, photo):
    classifier, spec = model_and_preprocessor
    pixels = spec.preprocess(helpers.photo_image("guacamole.jpg"))[None]
    before = classifier.predict_proba(pixels)
    classifier.explain(pixels)
    np.testing.assert_array_equal(classifier.predict_proba(pixels), before)
    if classifier.runtime == "torch":
        assert not any(p.requires_grad for p in classifier.model.parameters())


@pytest.mark.parametrize("name", ["pizza.jpg", "guacamole.jpg", "hamburger.jpg"])
def test_the_graph_cam_equals_torch_grad_cam(default_model, name):
    """Global pooling + linear head: CAM from the exported graph is Grad-CAM, no gradients needed."""
    spec = Checkpoint.read(default_model.path).input_spec
    pixels = spec.preprocess(helpers.photo_image(name))[None]
    served = load_classifier(default_model.path, "openvino", "cpu", precision="fp32").explain(pixels)
    reference = load_classifier(default_model.path, "torch", "cpu").explain(pixels)
    assert served.class_index == reference.class_index and served.method == reference.method == "grad-cam"
    assert np.abs(served.heatmap - reference.heatmap).max() < 1e-4
    assert served.confidence == pytest.approx(reference.confidence, abs=1e-4)
