"""Unit tests: the heatmap overlay's geometry and colours (Grad-CAM on the real model is in tests/model)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tikka.model.explain import jet, render_overlay
from tikka.model.imaging import ViewBox


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
