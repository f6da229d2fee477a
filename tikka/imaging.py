"""Safe decoding of uploaded images, and preprocessing with the model's own processor.

Everything here runs in the gateway, per request and in parallel, before
anything reaches a batch: one bad image in a batch would fail the whole batch.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from tikka.errors import ServiceError

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
# A truncated JPEG must be an error, not an image with a grey bottom half.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class UploadError(ServiceError):
    """An upload the service refuses; ``status_code`` is the HTTP answer."""

    status_code = 400
    error = "invalid_image"


class EmptyUpload(UploadError):
    error = "empty_upload"


class NotAnImage(UploadError):
    error = "not_an_image"


class ImageTooLarge(UploadError):
    status_code = 413
    error = "image_too_large"


def decode_upload(data: bytes, *, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Decode an upload into an upright 8-bit RGB image, or raise an ``UploadError``.

    ``draft_size``: for JPEGs, let libjpeg decode at a reduced DCT scale that is
    still at least this many pixels on both sides (decoding is the costliest
    step for phone photos, and the model sees 224 px anyway).
    """
    if not data:
        raise EmptyUpload("the uploaded file is empty")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise NotAnImage(
            f"the upload is not a readable image; accepted formats: {', '.join(ACCEPTED_FORMATS)}"
        ) from None
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"the image has more than {max_pixels} pixels") from None

    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    if draft_size and image.format == "JPEG":
        image.draft(image.mode, (draft_size, draft_size))
    try:
        image.seek(0)  # GIF / animated WebP: the first frame
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise NotAnImage(f"the image data is truncated or corrupt ({exc})") from None
    image = ImageOps.exif_transpose(image)
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB for every mode PIL decodes: palette, alpha, CMYK, 16-bit and float."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # PIL's convert() clips 16-bit values at 255, turning most pixels white.
        values = np.asarray(image, dtype=np.float64)
        if values.max(initial=0) > 255:
            values = values / 257.0
        image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
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


class ImagePreprocessor:
    """The checkpoint's own image processor, plus the geometry of what it crops."""

    def __init__(self, model_path: str | Path):
        from transformers import AutoImageProcessor

        self.processor = AutoImageProcessor.from_pretrained(str(model_path))
        self.resize_size, self.crop_fraction = _processor_geometry(self.processor)

    @property
    def draft_size(self) -> int:
        # Twice the resize target keeps the final bicubic downscale doing real
        # anti-aliasing work, so the draft decode barely moves probabilities.
        return 2 * self.resize_size

    def __call__(self, image: Image.Image) -> np.ndarray:
        """One RGB image -> float32 array (3, H, W), exactly as the processor makes it."""
        pixel_values = self.processor(images=image, return_tensors="pt")["pixel_values"]
        return pixel_values[0].numpy().astype(np.float32, copy=False)

    def view_box(self, width: int, height: int) -> ViewBox:
        """Where the processor's centre crop lies in an image of this size."""
        if self.crop_fraction is None:  # resized to a fixed size, nothing cropped
            return ViewBox(0, 0, width, height)
        side = min(width, height) * self.crop_fraction
        left, top = (width - side) / 2, (height - side) / 2
        return ViewBox(left, top, left + side, top + side)


def _processor_geometry(processor) -> tuple[int, float | None]:
    """(longest resize target in px, centre-crop fraction of the short side or None)."""
    data_config = getattr(processor, "data_config", None)
    if data_config:  # timm: resize short side to input/crop_pct, centre crop input
        input_size = int(data_config["input_size"][-1])
        crop_pct = float(data_config.get("crop_pct", 1.0))
        if data_config.get("crop_mode", "center") != "center":
            raise ValueError(f"unsupported timm crop_mode {data_config.get('crop_mode')!r}")
        return math.floor(input_size / crop_pct), crop_pct
    size = dict(getattr(processor, "size", None) or {})
    if "shortest_edge" in size:
        resize = int(size["shortest_edge"])
        if getattr(processor, "do_center_crop", False):
            crop = dict(processor.crop_size)
            return resize, min(crop["height"], crop["width"]) / resize
        return resize, None
    if "height" in size and "width" in size:  # ViT, SigLIP: squash to a fixed size
        return max(int(size["height"]), int(size["width"])), None
    raise ValueError(f"cannot tell how {type(processor).__name__} resizes images: size={size}")
