"""Preparing a photo before it is sent: upright, at most 1024 px, a JPEG under ~950 KB.

Reverse proxies in front of the service commonly cap bodies at 1 MB; phone
photos are several MB, often HEIC or AVIF, and often stored sideways with an EXIF
orientation tag. The browser cannot show a HEIC preview; the JPEG sent is what is shown.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from tikka.model.formats import PILLOW_IDS, register_openers

MAX_SIDE = 1024
TARGET_BYTES = 950_000
QUALITIES = (90, 80, 70, 60, 50)


class UnreadableImage(Exception):
    """The file is not an image this app can prepare."""


@dataclass(frozen=True)
class PreparedUpload:
    data: bytes  # the JPEG that is sent
    width: int
    height: int
    original_size: int
    sha256: str  # of the original upload: the cache key

    @property
    def size(self) -> int:
        return len(self.data)


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def prepare_upload(data: bytes, max_side: int = MAX_SIDE, target_bytes: int = TARGET_BYTES) -> PreparedUpload:
    register_openers()
    try:
        image = Image.open(io.BytesIO(data), formats=PILLOW_IDS)
        image.seek(0)  # an animation: its first frame, as the API classifies
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImage(f"this file could not be read as an image ({exc})") from None
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert("RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)  # never upscales

    while True:
        for quality in QUALITIES:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=quality, optimize=True)
            if buffer.tell() <= target_bytes:
                return PreparedUpload(buffer.getvalue(), image.width, image.height, len(data), content_hash(data))
        # Still too big at the lowest quality (noise-like content): shrink and retry.
        image = image.resize(
            (max(1, int(image.width * 0.8)), max(1, int(image.height * 0.8))), Image.Resampling.LANCZOS
        )
