"""The accepted image formats: one list, and phone photos (HEIC, AVIF) decoded upright and
held to the same header-first budgets as the others."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image, features

from tests import helpers
from tikka.errors import ImageTooCostly, ImageTooLarge, NotAnImage
from tikka.model.formats import ACCEPTED_FORMATS, EXTENSIONS, PILLOW_IDS, accepted_names
from tikka.model.imaging import WHOLE_IMAGE_CPU_S_PER_PIXEL, decode_upload, decoding_cost

PHONE_FORMATS = ("HEIF", "AVIF")


def test_the_pinned_pillow_decodes_avif_itself():
    assert features.check("avif"), "AVIF needs Pillow's own libavif (pillow-avif-plugin is not installed)"


@pytest.mark.parametrize("fmt", PHONE_FORMATS)
def test_a_sideways_phone_photo_decodes_upright(fmt):
    photo = helpers.photo_image()  # 640x400
    decoded = decode_upload(helpers.phone_photo(fmt, photo), max_pixels=40_000_000, cpu_budget_s=1.0)
    assert decoded.mode == "RGB" and decoded.size == photo.size
    assert np.abs(np.asarray(decoded, dtype=int) - np.asarray(photo, dtype=int)).mean() < 6


@pytest.mark.parametrize("fmt", PHONE_FORMATS)
def test_a_phone_bomb_is_refused_from_its_header(fmt):
    bomb = helpers.flat_bomb(fmt, 3000, 3000)
    assert len(bomb) < 50_000  # a few KB that would decode to 9 Mpx
    with pytest.raises(ImageTooLarge, match="3000x3000"):
        decoding_cost(bomb, max_pixels=4_000_000)


@pytest.mark.parametrize("fmt", PHONE_FORMATS)
def test_a_phone_photo_over_its_cpu_budget_is_refused_before_decoding(fmt):
    """libheif and libavif decode in one call that nothing can stop, so the budget is the header's estimate."""
    bomb = helpers.flat_bomb(fmt, 2000, 2000)
    estimate = 2000 * 2000 * WHOLE_IMAGE_CPU_S_PER_PIXEL[fmt]
    with pytest.raises(ImageTooCostly, match=fmt):
        decode_upload(bomb, max_pixels=40_000_000, cpu_budget_s=estimate / 2)
    assert decode_upload(bomb, max_pixels=40_000_000, cpu_budget_s=estimate * 2).size == (2000, 2000)


@pytest.mark.parametrize("fmt", PHONE_FORMATS)
def test_a_phone_photos_decoding_memory_is_estimated_from_its_header(fmt):
    cost = decoding_cost(helpers.flat_bomb(fmt, 1000, 800), max_pixels=40_000_000)
    # 4 bytes a pixel for the RGB image, 8 for the decoder's own buffers (measured 8.8 and 10.4).
    assert cost.memory_bytes == 1000 * 800 * 12 and cost.pixel_passes == 1000 * 800


@pytest.mark.parametrize("fmt", PHONE_FORMATS)
def test_a_truncated_phone_photo_is_not_an_image(fmt):
    data = helpers.phone_photo(fmt)
    with pytest.raises(NotAnImage):
        decode_upload(data[: len(data) // 2], max_pixels=40_000_000, cpu_budget_s=1.0)


def test_formats_outside_the_list_are_refused_by_name():
    with pytest.raises(NotAnImage, match=re.escape(accepted_names())):
        decode_upload(helpers.encode(helpers.photo_image(), "TIFF"), max_pixels=40_000_000)


def test_one_list_feeds_the_uploader_the_openapi_document_and_the_docs():
    from tikka.http.routes import ACCEPTED_IMAGES_TEXT
    from tikka.tools.reference import formats_page

    app = (helpers.ROOT / "frontend" / "app.py").read_text()
    assert "type=list(EXTENSIONS)" in app
    assert {"jpg", "png", "webp", "gif", "heic", "avif"} <= set(EXTENSIONS)
    assert set(PILLOW_IDS) == {"JPEG", "PNG", "WEBP", "GIF", "HEIF", "AVIF"}
    page = formats_page()
    for fmt in ACCEPTED_FORMATS:
        assert fmt.name in ACCEPTED_IMAGES_TEXT
        assert f"| {fmt.name} |" in page and all(media in page for media in fmt.media_types)


def test_the_front_end_prepares_heic_and_avif_as_upright_jpegs():
    from frontend.uploads import prepare_upload

    photo = helpers.photo_image()
    for fmt in PHONE_FORMATS:
        prepared = prepare_upload(helpers.phone_photo(fmt, photo))
        image = Image.open(__import__("io").BytesIO(prepared.data))
        assert image.format == "JPEG" and image.size == photo.size, fmt
