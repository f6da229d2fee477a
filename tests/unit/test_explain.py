"""Unit tests: Grad-CAM on the real model (torch, and the served graph's CAM), and the overlay's geometry."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests import helpers
from tikka.model.checkpoint import Checkpoint
from tikka.model.explain import jet, render_overlay
from tikka.model.imaging import ViewBox
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


@pytest.mark.parametrize(
    ("size", "expected"), [((640, 400), (640, 400)), ((3000, 1000), (1024, 341)), ((300, 900), (300, 900))]
)
def test_overlay_png_keeps_the_upload_proportions(size, expected):
    heatmap = np.random.default_rng(1).random((7, 7)).astype(np.float32)
    image = Image.new("RGB", size, (120, 80, 40))
    overlay = render_overlay(image, heatmap, ViewBox(0, 0, *size))
    for png in (overlay.blended_png, overlay.heatmap_png):
        decoded = Image.open(io.BytesIO(png))
        assert decoded.format == "PNG" and decoded.size == expected


def test_overlay_places_the_grid_on_the_cropped_region():
    heatmap = np.ones((7, 7), dtype=np.float32)
    image = Image.new("RGB", (640, 400), (0, 0, 0))
    overlay = render_overlay(image, heatmap, ViewBox(145, 25, 495, 375))
    pixels = np.asarray(Image.open(io.BytesIO(overlay.blended_png)).convert("RGB"), dtype=int)
    inside, outside = pixels[200, 320], pixels[200, 20]
    # On black, the blend is 0.45 x jet: dark red for full attention inside the
    # crop, dark blue (zero) outside it, where the model saw nothing.
    assert inside[0] > 40 and inside[2] < 5
    assert outside[2] > 40 and outside[0] < 5


def test_jet_ramp_endpoints():
    assert tuple(jet(np.array([0.0]))[0]) == (0, 0, 127)
    assert tuple(jet(np.array([1.0]))[0]) == (127, 0, 0)


def test_heatmap_alone_is_the_colour_ramp_the_overlay_blends():
    heatmap = np.linspace(0, 1, 49, dtype=np.float32).reshape(7, 7)
    image = Image.new("RGB", (224, 224), (200, 200, 200))
    overlay = render_overlay(image, heatmap, ViewBox(0, 0, 224, 224))
    coloured = Image.open(io.BytesIO(overlay.heatmap_png)).convert("RGB")
    blended = Image.open(io.BytesIO(overlay.blended_png)).convert("RGB")
    expected = Image.blend(image, coloured, 0.45)
    difference = np.abs(np.asarray(expected, dtype=int) - np.asarray(blended, dtype=int))
    assert difference.max() <= 1
