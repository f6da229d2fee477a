"""Unit tests: safe decoding of every accepted format and mode, and the preprocessing geometry."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from tests import helpers
from tikka.errors import ImageTooCostly
from tikka.model.checkpoint import Checkpoint
from tikka.model.imaging import (
    EmptyUpload,
    ImageTooLarge,
    InputSpec,
    NotAnImage,
    decode_upload,
)

LIMIT = 40_000_000


def decode(data: bytes, **kwargs) -> Image.Image:
    return decode_upload(data, max_pixels=kwargs.pop("max_pixels", LIMIT), **kwargs)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_accepted_formats_decode_to_rgb_of_the_same_size(fmt):
    photo = helpers.photo_image()
    image = decode(helpers.encode(photo, fmt))
    assert image.mode == "RGB" and image.size == photo.size


def test_gif_uses_the_first_frame():
    image = decode(helpers.two_frame_gif(first=(255, 0, 0), second=(0, 0, 255)))
    red, green, blue = image.getpixel((5, 5))
    assert red > 200 and blue < 50


def test_transparent_pixels_are_composited_on_white_not_their_stored_black():
    image = decode(helpers.rgba_png(helpers.photo_image()))
    assert image.mode == "RGB"
    assert image.getpixel((10, 5)) == (255, 255, 255)
    assert image.getpixel((10, image.height - 5)) != (255, 255, 255)


def test_grayscale_becomes_three_equal_channels():
    gray = helpers.photo_image().convert("L")
    image = decode(helpers.encode(gray, "PNG"))
    r, g, b = (np.asarray(image)[..., c] for c in range(3))
    assert image.mode == "RGB" and (r == g).all() and (g == b).all()


def test_sixteen_bit_png_is_scaled_not_clipped():
    image = decode(helpers.sixteen_bit_png(value=40000))
    # 40000 / 257 = 155.6: PIL's own convert() would clip to 255 (white).
    assert image.getpixel((0, 0)) == (155, 155, 155)


def test_cmyk_jpeg_keeps_its_colours():
    photo = helpers.photo_image()
    cmyk = helpers.encode(photo.convert("CMYK"), "JPEG", quality=95)
    image = decode(cmyk)
    assert image.mode == "RGB"
    difference = np.abs(np.asarray(image, dtype=int) - np.asarray(photo, dtype=int)).mean()
    assert difference < 12


def test_exif_orientation_is_applied():
    photo = helpers.photo_image()  # 640x400, landscape
    stored = helpers.exif_rotated_jpeg(photo, orientation=6)
    assert Image.open(__import__("io").BytesIO(stored)).size == (400, 640)
    image = decode(stored)
    assert image.size == (640, 400)
    difference = np.abs(np.asarray(image, dtype=int) - np.asarray(photo, dtype=int)).mean()
    assert difference < 10, "the upright image should match the original photo"


def test_empty_upload_is_rejected():
    with pytest.raises(EmptyUpload):
        decode(b"")


@pytest.mark.parametrize("data", [b"hello world", b"%PDF-1.7" + b"\0" * 200, b"\x89PNG\r\n\x1a\n" + b"\0" * 20])
def test_bytes_that_are_not_an_image_are_rejected(data):
    with pytest.raises(NotAnImage):
        decode(data)


def test_truncated_jpeg_is_rejected(photo):
    with pytest.raises(NotAnImage, match="truncated"):
        decode(helpers.truncated_jpeg(photo("pizza.jpg")))


def test_decompression_bomb_is_rejected_before_decoding():
    bomb = helpers.pixel_bomb_png(3000, 3000)
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLarge) as excinfo:
        decode(bomb, max_pixels=4_000_000)
    assert excinfo.value.status_code == 413


def test_draft_decode_shrinks_large_jpegs_but_never_below_the_target():
    large = helpers.photo_image().resize((2560, 1600))
    image = decode(helpers.encode(large, "JPEG", quality=90), draft_size=512)
    assert image.size == (1280, 800)  # DCT scale 1/2: the smallest scale still >= 512
    small = decode(helpers.encode(helpers.photo_image(), "JPEG"), draft_size=512)
    assert small.size == (640, 400)


def normalised(spec: InputSpec, pixels: np.ndarray) -> np.ndarray:
    """What the classifier's graph does to the uint8 pixels, in numpy."""
    values = pixels.transpose(2, 0, 1).astype(np.float32) * spec.rescale
    return (values - np.array(spec.mean, np.float32)[:, None, None]) / np.array(spec.std, np.float32)[:, None, None]


@pytest.mark.parametrize("name", ["pizza.jpg", "guacamole.jpg", "hamburger.jpg"])
def test_lean_preprocessing_matches_the_model_processor(default_model, photo, name):
    """uint8 pixels from PIL, normalised in the batch = the checkpoint's own processor (torch)."""
    from transformers import AutoImageProcessor

    spec = Checkpoint.read(default_model.path).input_spec
    ours = spec.preprocess(decode(photo(name)))
    processor = AutoImageProcessor.from_pretrained(default_model.path)
    reference = processor(images=Image.open(helpers.ROOT / "tests/data" / name).convert("RGB"), return_tensors="pt")[
        "pixel_values"
    ][0].numpy()
    assert ours.dtype == np.uint8 and ours.shape == (224, 224, 3)
    np.testing.assert_allclose(normalised(spec, ours), reference, atol=1e-6)


def test_model_processor_matches_timm_eval_transform(default_model):
    """The saved processor config reproduces timm's own eval pipeline for the architecture."""
    import timm
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    transform = create_transform(**resolve_data_config({}, model=model), is_training=False)
    image = helpers.photo_image("guacamole.jpg")
    spec = Checkpoint.read(default_model.path).input_spec
    np.testing.assert_allclose(normalised(spec, spec.preprocess(image)), transform(image).numpy(), atol=1e-6)


def test_view_box_is_the_centre_crop_of_the_short_side(default_model):
    spec = Checkpoint.read(default_model.path).input_spec
    assert spec.resize == 256 and spec.draft_size == 512
    box = spec.view_box(640, 400)
    assert (box.right - box.left) == pytest.approx(350) and (box.bottom - box.top) == pytest.approx(350)
    assert box.left == pytest.approx(145) and box.top == pytest.approx(25)


PEAK_RSS_SCRIPT = """
import re, sys
from PIL import Image
from tikka.model.checkpoint import Checkpoint
spec = Checkpoint.read(sys.argv[1]).input_spec
pixels = spec.preprocess(Image.new("RGB", (int(sys.argv[2]), int(sys.argv[3])), (200, 120, 40)))
assert pixels.shape == (224, 224, 3), pixels.shape
# VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec.
peak_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(peak_kb // 1024, int(abs(pixels.astype(int) - [200, 120, 40]).max()))
"""


@pytest.mark.parametrize("size", [(20000, 1), (1, 3000), (3000, 2)])
def test_extreme_aspect_ratios_are_resized_without_blowing_up_memory(default_model, size):
    """A 20000x1 image once took 16 s and 5 GB: the full resize made a 5,120,000x256 image.

    Measured as the peak RSS of a fresh process (RSS after the call says nothing:
    the allocator hands the big buffer back)."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_SCRIPT, str(default_model.path), *map(str, size)],
        cwd=helpers.ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    peak_mb, colour_error = map(int, result.stdout.split())
    assert peak_mb < 200, f"peak RSS {peak_mb} MB"
    assert colour_error <= 2  # a flat colour stays that colour


def test_wide_panoramas_resize_only_the_crop_with_the_same_answers(default_model):
    """The crop-only resize (past 4:1) against the full resize on a 5:1 panorama: same classification."""
    from tikka.model.runtime import load_classifier

    spec = Checkpoint.read(default_model.path).input_spec
    panorama = helpers.photo_image("pizza.jpg").resize((2000, 400))
    width, height = panorama.size
    size = (int(spec.resize * width / height), spec.resize)
    left, top = round((size[0] - 224) / 2), round((size[1] - 224) / 2)
    full = np.asarray(panorama.resize(size, spec.resample).crop((left, top, left + 224, top + 224)))
    cropped_first = spec.preprocess(panorama)
    classifier = load_classifier(default_model.path, "openvino", "cpu")
    expected, actual = classifier.predict_proba(full[None]), classifier.predict_proba(cropped_first[None])
    assert expected.argmax() == actual.argmax() and np.abs(expected - actual).max() < 1e-3


SIXTEEN_BIT_PEAK_SCRIPT = """
import io, re, sys
import numpy as np
from PIL import Image
from tikka.model.imaging import decode_upload
buffer = io.BytesIO()
Image.fromarray(np.full((5000, 5000), 40000, dtype=np.uint16)).save(buffer, format="PNG")
data = buffer.getvalue()
open("/proc/self/clear_refs", "w").write("5")  # the peak from here on: the decode alone
image = decode_upload(data, max_pixels=40_000_000)
peak_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(len(data), peak_kb // 1024, image.getpixel((0, 0))[0])
"""


def test_a_small_16_bit_png_decodes_without_a_float64_copy():
    """A 60 KB 5000x5000 16-bit PNG peaked at 483 MB (float64 arrays); now about 245 MB.
    Peak RSS of a fresh process: memory, unlike time, does not depend on the machine's load."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", SIXTEEN_BIT_PEAK_SCRIPT],
        cwd=helpers.ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    size, peak_mb, value = map(int, result.stdout.split())
    assert size < 100_000 and value == 40000 // 257
    assert peak_mb < 350, f"peak RSS {peak_mb} MB"


def test_an_mpo_photo_is_decoded_at_the_draft_scale_like_a_jpeg():
    """Phones write MPO (a JPEG with a multi-picture index): it skipped the reduced-scale
    decode, 10x the time and +144 MB for the same picture as a plain JPEG."""
    photo = helpers.photo_image("pizza.jpg").resize((3000, 3000))
    as_mpo, as_jpeg = io.BytesIO(), io.BytesIO()
    photo.save(as_mpo, format="MPO", save_all=True, append_images=[photo.copy()])
    photo.save(as_jpeg, format="JPEG")
    assert Image.open(io.BytesIO(as_mpo.getvalue())).format == "MPO"
    mpo = decode_upload(as_mpo.getvalue(), max_pixels=40_000_000, draft_size=448)
    jpeg = decode_upload(as_jpeg.getvalue(), max_pixels=40_000_000, draft_size=448)
    assert mpo.size == jpeg.size == (750, 750)


def jpeg(progressive: bool = False) -> bytes:
    buffer = io.BytesIO()
    helpers.photo_image("pizza.jpg").save(buffer, format="JPEG", progressive=progressive)
    return buffer.getvalue()


def test_a_progressive_photo_is_decoded():
    data = jpeg(progressive=True)
    assert data.count(b"\xff\xda") == 10
    assert decode_upload(data, max_pixels=40_000_000).size == helpers.photo_image("pizza.jpg").size


def test_a_jpeg_with_too_many_scans_is_refused_before_decoding():
    """The CPU bomb: thousands of progressive scans (29 s of CPU for 370 KB)."""
    data = jpeg(progressive=True)
    first_scan = data.index(b"\xff\xda")
    bomb = data[:first_scan] + data[first_scan:-2] * 20 + b"\xff\xd9"  # 200 scans
    with pytest.raises(ImageTooLarge, match="200 scans"):
        decode_upload(bomb, max_pixels=40_000_000)


def test_a_decode_past_its_cpu_budget_is_stopped_there():
    """A bomb under the scan limit (90 scans) still costs ~10x a photo of its size: the
    decode is stopped at its CPU budget, in the thread that decodes, not left to run."""
    bomb = helpers.progressive_jpeg_bomb(2400)
    started = time.thread_time()
    decode_upload(bomb, max_pixels=40_000_000)
    whole = time.thread_time() - started
    budget = whole / 5
    started = time.thread_time()
    with pytest.raises(ImageTooCostly, match="was stopped there"):
        decode_upload(bomb, max_pixels=40_000_000, cpu_budget_s=budget)
    spent = time.thread_time() - started
    assert budget <= spent < 2 * budget, f"stopped after {spent:.3f} s of CPU; budget {budget:.3f}, whole {whole:.3f}"
    photo = helpers.encode(helpers.photo_image("pizza.jpg"), "JPEG", progressive=True)
    assert (
        decode_upload(photo, max_pixels=40_000_000, cpu_budget_s=budget).size == helpers.photo_image("pizza.jpg").size
    )


def test_a_jpeg_with_thousands_of_app_segments_is_refused_before_parsing():
    """10 MB of empty APP segments were parsed one by one in Python, under the GIL."""
    data = jpeg()
    bomb = data[:2] + b"\xff\xe1\x00\x02" * 100_000 + data[2:]
    with pytest.raises(ImageTooLarge, match="APP segments"):
        decode_upload(bomb, max_pixels=40_000_000)
