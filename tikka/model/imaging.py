"""Safe decoding of uploaded images, and preprocessing with the model's own processor.

Everything here runs in the gateway, per request and in parallel, before
anything reaches a batch: one bad image in a batch would fail the whole batch.
"""

from __future__ import annotations

import io
import itertools
import math
import re
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps

from tikka.errors import EmptyUpload, ImageTooCostly, ImageTooLarge, NotAnImage
from tikka.model.formats import PILLOW_IDS, WHOLE_IMAGE_DECODERS, accepted_names, register_openers

register_openers()
# A truncated JPEG must be an error, not an image with a grey bottom half.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def decode_upload(
    data: bytes,
    *,
    max_pixels: int,
    draft_size: int | None = None,
    opened: Image.Image | None = None,
    cpu_budget_s: float | None = None,
) -> Image.Image:
    """Decode an upload into an upright 8-bit RGB image, or raise ``EmptyUpload``, ``NotAnImage``,
    ``ImageTooLarge`` or ``ImageTooCostly``.

    ``draft_size``: for JPEGs, let libjpeg decode at a reduced DCT scale that is
    still at least this many pixels on both sides (decoding is the costliest
    step for phone photos, and the model sees 224 px anyway). ``opened``: what
    ``decoding_cost`` already opened, so the header is read once. ``cpu_budget_s``:
    the CPU time the decoder may spend; past it, the decode stops (``BudgetedInput``).
    """
    image = opened or open_upload(data, max_pixels=max_pixels, draft_size=draft_size)
    if cpu_budget_s is not None and image.format in WHOLE_IMAGE_DECODERS:
        check_decode_cpu(image, cpu_budget_s)
    elif cpu_budget_s is not None:
        image.fp = BudgetedInput(image.fp, cpu_budget_s)
        image.decodermaxblock = DECODE_BLOCK_BYTES
    try:
        image.seek(0)  # GIF / animated WebP: the first frame
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise NotAnImage(f"the image data is truncated or corrupt ({exc})") from None
    # in_place: without it Pillow returns a full copy even when there is nothing to turn.
    ImageOps.exif_transpose(image, in_place=True)
    return to_rgb(image)


# Pillow feeds a decoder its input in blocks of this many bytes and is back in Python
# between two blocks, where ``BudgetedInput`` checks the CPU spent. Pillow's 64 KB
# blocks could hold a hundred progressive scans, ~10 ms of CPU each at 40 Mpx.
DECODE_BLOCK_BYTES = 4096


class BudgetedInput:
    """An upload's bytes as Pillow's decoder reads them, which stop once the decoding
    thread has spent ``budget_s`` of CPU: ``read`` raises ``ImageTooCostly``, the decoder
    is abandoned, and the thread is free. A 504 does not stop a decode in a thread; this
    does, without a process per decode. Thread CPU time, not wall time: a decode that
    waits for a core under load is not charged for the wait."""

    def __init__(self, raw: io.BytesIO, budget_s: float):
        self.raw, self.budget_s = raw, budget_s
        self.deadline = time.thread_time() + budget_s

    def read(self, size: int = -1) -> bytes:
        if time.thread_time() > self.deadline:
            raise ImageTooCostly(
                f"decoding the image took more than {self.budget_s:g} s of CPU, the limit; it was stopped there"
            )
        return self.raw.read(size)

    def __getattr__(self, name: str):  # seek, tell, close: the upload's own
        return getattr(self.raw, name)


# CPU seconds per decoded pixel of the decoders that run as one C call, which nothing can
# stop midway: libheif (libde265) and libavif (dav1d). Measured as process CPU time (their
# decoders run threads of their own) on photos of 0.75 and 12 Mpx, on a 2-core AMD EPYC:
# HEIC 37-48 ns, AVIF 13-18 ns. A 12 Mpx iPhone HEIC is ~0.6 s; a 40 Mpx one is refused at 1 s.
WHOLE_IMAGE_CPU_S_PER_PIXEL = {"HEIF": 50e-9, "AVIF": 25e-9}


def check_decode_cpu(image: Image.Image, budget_s: float) -> None:
    """``ImageTooCostly`` when a whole-image decoder would need more than ``budget_s`` of CPU,
    estimated from the header before it starts."""
    estimate = image.width * image.height * WHOLE_IMAGE_CPU_S_PER_PIXEL[image.format]
    if estimate > budget_s:
        raise ImageTooCostly(
            f"decoding this {image.width}x{image.height} {image.format} would take about {estimate:.1f} s of CPU;"
            f" the limit is {budget_s:g} s"
        )


def open_upload(data: bytes, *, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """An upload's header read (PIL's ``open``), its size checked; for a JPEG, the draft scale set."""
    if not data:
        raise EmptyUpload("the uploaded file is empty")
    scans = check_jpeg_cost(data)
    if (canvas := webp_canvas(data)) is not None:  # before PIL: its WebP open allocates the canvas
        check_pixels(canvas[0], canvas[1], max_pixels)
    try:
        image = Image.open(io.BytesIO(data), formats=PILLOW_IDS)
    except (OSError, SyntaxError, RuntimeError):  # UnidentifiedImageError, or a decoder failing on the header
        raise NotAnImage(f"the upload is not a readable image; accepted formats: {accepted_names()}") from None
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"the image has more than {max_pixels} pixels") from None
    except ValueError as exc:  # PIL's limit on a PNG text or ICC chunk: a decompression bomb too
        raise ImageTooLarge(f"the image's metadata is too large to decode ({exc})") from None
    check_pixels(*image.size, max_pixels)
    # For decoding_cost, so the 10 MB a bomb may send are not scanned a second time.
    image.info[SCANS_KEY] = scans
    if draft_size and is_jpeg(image):
        image.draft(image.mode, (draft_size, draft_size))
    return image


def is_jpeg(image: Image.Image) -> bool:
    # MPO (a JPEG with a multi-picture index, as phones write them) decodes the same way.
    return image.format in ("JPEG", "MPO")


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLarge(f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")


def webp_canvas(data: bytes) -> tuple[int, int, bool] | None:
    """(width, height, has alpha) from a WebP's first chunk, or None if ``data`` is no WebP.

    Read by hand because Pillow's WebP ``open`` already allocates libwebp's canvases
    (8 bytes a pixel): a 68 KB 6200x6200 WebP took ~300 MB before any size check.
    """
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: the canvas, 24-bit sizes minus one; flags bit 4 is alpha
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height, bool(data[20] & 0x10)
    if chunk == b"VP8L":  # lossless: 14-bit sizes minus one, then the alpha bit
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1)
    if chunk == b"VP8 ":  # lossy, no alpha: 14-bit sizes after the frame tag and start code
        return (int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF, False)
    return None


@dataclass(frozen=True)
class DecodingCost:
    """What ``decode_upload`` will cost, from the header alone."""

    memory_bytes: int  # its peak memory (``decoding_bytes``)
    # Pixels times passes over them: a JPEG's entropy decoding visits every block of the
    # full-size image once per scan, whatever the draft scale; other formats once.
    pixel_passes: int
    opened: Image.Image | None  # to pass on to decode_upload; None for a WebP, whose open allocates


def decoding_cost(data: bytes, *, max_pixels: int, draft_size: int | None = None) -> DecodingCost:
    """What decoding ``data`` will cost, raising what ``decode_upload`` raises for a bad or
    oversized header."""
    if (canvas := webp_canvas(data)) is not None:
        width, height, alpha = canvas
        check_pixels(width, height, max_pixels)
        # As decoding_bytes for an opened WebP: RGB(A) 4, libwebp 12; alpha: RGB copy 4, compositing 12.
        return DecodingCost(width * height * (32 if alpha else 16), width * height, None)
    image = open_upload(data, max_pixels=max_pixels)
    passes = max(1, image.info[SCANS_KEY]) if is_jpeg(image) else 1
    pixel_passes = image.width * image.height * passes
    if draft_size and is_jpeg(image):
        image.draft(image.mode, (draft_size, draft_size))
    return DecodingCost(decoding_bytes(image), pixel_passes, image)


ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
# Bytes per pixel that PIL stores for a mode: 3- and 4-band images, I and F take 32 bits.
STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}


def decoding_bytes(image: Image.Image) -> int:
    """The peak memory of decoding an opened upload (``decode_upload``), from its header alone.

    Per pixel of the (drafted) size: the decoded pixels, the RGB copy when the mode is
    another, 12 bytes for compositing alpha on white, 3 for the 16-bit scaling in numpy,
    and 12 for libwebp's own buffer, 8 for libheif's and libavif's. Measured on 6200x6200
    images (ru_maxrss of one decode): RGB WebP 16.1 B/px, RGBA PNG 20.0, 16-bit PNG 9.1, grey
    PNG and palette GIF 5.0, RGB JPEG without a draft 4.1; each is what this formula gives,
    within 0.1. On 4000x3000 photos: HEIC 8.8, AVIF 10.4 (the formula: 12).
    """
    per_pixel = STORED_BYTES.get(image.mode, 4)
    if image.mode != "RGB":
        per_pixel += 4
    if image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        per_pixel += 12
    if image.mode in SIXTEEN_BIT_MODES:
        per_pixel += 3
    if image.format == "WEBP":
        per_pixel += 12
    elif image.format in WHOLE_IMAGE_DECODERS:
        per_pixel += 8
    width, height = image.size
    return width * height * per_pixel


# A JPEG's decoding cost grows with its scans and header segments, not its pixels: a
# 370 KB progressive JPEG with a few thousand scans took 29 s of CPU, and 10 MB of empty
# APP segments are parsed one by one in Python. A photo has 1 scan (10 when progressive)
# and a handful of segments (a large ICC profile, in 64 KB chunks, some dozens). In a
# JPEG's coded data 0xFF is always followed by 0x00 or a restart marker, so these two
# byte pairs appear nowhere but as markers.
MAX_JPEG_SCANS = 100
MAX_JPEG_HEADER_SEGMENTS = 256
JPEG_SCAN_MARKER = b"\xff\xda"
SCANS_KEY = "tikka_jpeg_scans"  # in an opened upload's info: check_jpeg_cost's count
JPEG_APP_MARKER = re.compile(rb"\xff[\xe0-\xef]")


def check_jpeg_cost(data: bytes) -> int:
    """A JPEG's scan count (0 for anything else), or ``ImageTooLarge`` past the limits."""
    if not data.startswith(b"\xff\xd8"):
        return 0
    scans = data.count(JPEG_SCAN_MARKER)
    if scans > MAX_JPEG_SCANS:
        raise ImageTooLarge(f"the JPEG has {scans} scans; at most {MAX_JPEG_SCANS} are decoded")
    first_scan = data.find(JPEG_SCAN_MARKER)
    header = data if first_scan < 0 else data[:first_scan]
    # Counted up to one past the limit: a header of millions of markers costs no more to refuse.
    segments = sum(1 for _ in itertools.islice(JPEG_APP_MARKER.finditer(header), MAX_JPEG_HEADER_SEGMENTS + 1))
    if segments > MAX_JPEG_HEADER_SEGMENTS:
        raise ImageTooLarge(f"the JPEG has more than {MAX_JPEG_HEADER_SEGMENTS} APP segments; no more are read")
    return scans


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB for every mode PIL decodes: palette, alpha, CMYK, 16-bit and float."""
    if image.mode in SIXTEEN_BIT_MODES:
        # PIL's convert() clips 16-bit values at 255, turning most pixels white. In the
        # decoded type (integer division for 16-bit), not float64: a 75 KB 6200x6200 PNG
        # took +616 MB that way.
        values = np.asarray(image)
        if values.max(initial=0) > 255:
            values = values // 257 if values.dtype.kind in "iu" else values / 257.0
        image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ALPHA_MODES:
        # Composite on white, as a browser shows it; a plain convert("RGB") keeps
        # whatever colour the transparent pixels happen to store (often black).
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


@dataclass(frozen=True)
class ViewBox:
    """The part of the original image the model saw, in original pixel coordinates."""

    left: float
    top: float
    right: float
    bottom: float


# Past this long-to-short side ratio only the cropped region is resized (see preprocess).
MAX_RESIZED_SIDES_RATIO = 4

RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class InputSpec:
    """How a checkpoint wants its pixels, read from its own files.

    Read from ``config.json`` (timm's ``pretrained_cfg``) or
    ``preprocessor_config.json`` (transformers) as plain JSON, so that the
    gateway needs neither transformers nor torch to prepare an image. The
    normalisation (``mean``, ``std``, ``rescale``) is applied by the classifier
    to a whole batch, inside the exported graph where there is one.
    """

    height: int  # what the model sees
    width: int
    resize: int | None  # short side before a centre crop; None: squash to (height, width)
    resample: Image.Resampling
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float = 1 / 255
    # torchvision (timm) rounds the crop offset, transformers floors it.
    round_crop_offset: bool = True

    @classmethod
    def from_configs(cls, config: dict, processor: dict | None) -> InputSpec:
        """From the checkpoint's config.json and its preprocessor_config.json (None if it has none)."""
        if cfg := config.get("pretrained_cfg"):  # timm: resize short side to input/crop_pct, centre crop
            _, height, width = cfg["input_size"]
            crop_pct = float(cfg.get("crop_pct", 1.0))
            if cfg.get("crop_mode", "center") != "center":
                raise ValueError(f"unsupported timm crop_mode {cfg.get('crop_mode')!r}")
            return cls(
                height=height,
                width=width,
                resize=math.floor(max(height, width) / crop_pct),
                resample=RESAMPLING[cfg.get("interpolation", "bicubic")],
                mean=tuple(cfg["mean"]),
                std=tuple(cfg["std"]),
            )
        if processor is None:
            raise ValueError("the checkpoint has neither timm's pretrained_cfg nor a preprocessor_config.json")
        size = processor.get("size") or {}
        normalize = processor.get("do_normalize", True)
        common = {
            "resample": Image.Resampling(processor.get("resample", Image.Resampling.BILINEAR)),
            "mean": tuple(processor.get("image_mean", (0.0,) * 3)) if normalize else (0.0,) * 3,
            "std": tuple(processor.get("image_std", (1.0,) * 3)) if normalize else (1.0,) * 3,
            "rescale": float(processor.get("rescale_factor", 1 / 255)) if processor.get("do_rescale", True) else 1.0,
            "round_crop_offset": False,
        }
        if "height" in size and "width" in size:  # ViT, SigLIP: squash to a fixed size
            return cls(height=int(size["height"]), width=int(size["width"]), resize=None, **common)
        if "shortest_edge" in size and processor.get("do_center_crop"):
            crop = processor["crop_size"]
            return cls(
                height=int(crop["height"]), width=int(crop["width"]), resize=int(size["shortest_edge"]), **common
            )
        raise ValueError(f"cannot tell how the checkpoint resizes images: size={size}")

    @property
    def draft_size(self) -> int:
        # Twice the resize target keeps the final downscale doing real
        # anti-aliasing work, so the draft decode barely moves probabilities.
        return 2 * (self.resize or max(self.height, self.width))

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One RGB image -> uint8 (height, width, 3): the processor's geometry, not its arithmetic.

        Written with PIL rather than the checkpoint's processor because the
        processor needs torch and ships float32 (four times the bytes); the
        pixels are the same (tests/unit/test_imaging.py checks both against it).
        """
        if self.resize is None:
            return np.asarray(image.resize((self.width, self.height), self.resample))
        width, height = image.size
        # torchvision's and transformers' rule: the short side becomes `resize`,
        # the long side is truncated, not rounded.
        if width <= height:
            size = (self.resize, int(self.resize * height / width))
        else:
            size = (int(self.resize * width / height), self.resize)
        offset = round if self.round_crop_offset else math.floor
        left, top = offset((size[0] - self.width) / 2), offset((size[1] - self.height) / 2)
        if size[0] * size[1] > MAX_RESIZED_SIDES_RATIO * self.resize**2:
            # A 20000x1 image would resize to 5,120,000x256 (3.9 GB) only to be
            # cropped to 224x224: resize just the region the crop keeps. Within a
            # few levels of the full resize, not bit-equal, hence only here.
            scale_x, scale_y = width / size[0], height / size[1]
            box = (left * scale_x, top * scale_y, (left + self.width) * scale_x, (top + self.height) * scale_y)
            return np.asarray(image.resize((self.width, self.height), self.resample, box=box))
        resized = image.resize(size, self.resample)
        return np.asarray(resized.crop((left, top, left + self.width, top + self.height)))

    def view_box(self, width: int, height: int) -> ViewBox:
        """Where the centre crop lies in an image of this size."""
        if self.resize is None:  # squashed to a fixed size, nothing cropped
            return ViewBox(0, 0, width, height)
        scale = min(width, height) / self.resize
        crop_w, crop_h = self.width * scale, self.height * scale
        left, top = (width - crop_w) / 2, (height - crop_h) / 2
        return ViewBox(left, top, left + crop_w, top + crop_h)
