"""Unit tests: what the front end sends (upright, <= 1024 px, JPEG under ~950 KB)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from frontend.uploads import TARGET_BYTES, UnreadableImage, prepare_upload
from tests import helpers


def decoded(prepared) -> Image.Image:
    image = Image.open(io.BytesIO(prepared.data))
    assert image.format == "JPEG"
    return image


def test_large_photo_is_downscaled_to_1024_on_the_long_side_and_under_the_limit():
    rng = np.random.default_rng(0)
    # Noise-heavy 4000x3000: a worst case for JPEG size.
    noisy = Image.fromarray(rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8))
    prepared = prepare_upload(helpers.encode(noisy, "PNG"))
    image = decoded(prepared)
    assert max(image.size) <= 1024 and prepared.size <= TARGET_BYTES
    assert prepared.size == len(prepared.data) and prepared.original_size > prepared.size


def test_exif_rotated_photo_is_sent_upright():
    photo = helpers.photo_image()  # 640x400
    prepared = prepare_upload(helpers.exif_rotated_jpeg(photo, orientation=6))
    image = decoded(prepared)
    assert image.size == (640, 400)
    difference = np.abs(np.asarray(image, dtype=int) - np.asarray(photo, dtype=int)).mean()
    assert difference < 12


def test_png_with_alpha_is_flattened_on_white():
    prepared = prepare_upload(helpers.rgba_png(helpers.photo_image()))
    image = decoded(prepared).convert("RGB")
    assert all(channel > 240 for channel in image.getpixel((10, 5)))


def test_tiny_image_is_not_upscaled():
    prepared = prepare_upload(helpers.encode(Image.new("RGB", (12, 9), (200, 30, 30)), "PNG"))
    assert decoded(prepared).size == (12, 9) and (prepared.width, prepared.height) == (12, 9)


def test_same_content_same_cache_key_and_bytes():
    data = (helpers.ROOT / "tests/data/pizza.jpg").read_bytes()
    first, second = prepare_upload(data), prepare_upload(data)
    assert first.sha256 == second.sha256 and first.data == second.data


def test_unreadable_file_is_a_clear_error():
    with pytest.raises(UnreadableImage):
        prepare_upload(b"definitely not an image")
