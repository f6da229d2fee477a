"""The image formats the API accepts: the one list that the decoder, the OpenAPI
description, the docs' table (docs/reference/formats.md), the Streamlit uploader and the
``tikka`` command read.

Nothing here imports more than Pillow and its HEIF and AVIF plugins, so the front end's
image copies this file alone (docker/frontend.Dockerfile).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class ImageFormat:
    name: str  # what people call it
    pillow_ids: tuple[str, ...]  # the format IDs Pillow opens it as
    extensions: tuple[str, ...]  # file name endings, lower case, without the dot
    media_types: tuple[str, ...]
    decoder: str  # which library decodes it
    note: str = ""


ACCEPTED_FORMATS = (
    ImageFormat(
        "JPEG",
        ("JPEG",),
        ("jpg", "jpeg", "jpe", "jfif"),
        ("image/jpeg",),
        "Pillow (libjpeg-turbo)",
        "Decoded at a reduced scale where the model sees less (draft mode); MPO (phone multi-picture) too.",
    ),
    ImageFormat("PNG", ("PNG",), ("png",), ("image/png",), "Pillow (libpng)", "16-bit and alpha included."),
    ImageFormat("WebP", ("WEBP",), ("webp",), ("image/webp",), "Pillow (libwebp)", "Animated: the first frame."),
    ImageFormat("GIF", ("GIF",), ("gif",), ("image/gif",), "Pillow", "Animated: the first frame."),
    ImageFormat(
        "HEIC / HEIF",
        ("HEIF",),
        ("heic", "heif", "hif"),
        ("image/heic", "image/heif"),
        "pillow-heif (libheif)",
        "What iPhones save. The primary image; EXIF orientation honoured.",
    ),
    ImageFormat(
        "AVIF",
        ("AVIF",),
        ("avif",),
        ("image/avif",),
        "Pillow (libavif)",
        "What many Android phones and browsers save. The primary image; EXIF orientation honoured.",
    ),
)
PILLOW_IDS = tuple(pillow_id for fmt in ACCEPTED_FORMATS for pillow_id in fmt.pillow_ids)
EXTENSIONS = tuple(extension for fmt in ACCEPTED_FORMATS for extension in fmt.extensions)
# Decoded by one call into libheif or libavif: Pillow cannot stop them between two reads
# of the input, so their CPU budget is checked from the header (imaging.check_decode_cpu).
WHOLE_IMAGE_DECODERS = ("HEIF", "AVIF")


@functools.cache
def register_openers() -> None:
    """Teach Pillow HEIF (pillow-heif), once per process. AVIF needs nothing: the pinned Pillow
    decodes it itself (libavif in its wheels; tests/unit/test_formats.py holds that), so
    pillow-avif-plugin is not installed."""
    from pillow_heif import register_heif_opener

    # No thumbnails: the primary image is what is classified, and each thumbnail would be decoded too.
    register_heif_opener(thumbnails=False)


def accepted_names() -> str:
    return ", ".join(fmt.name for fmt in ACCEPTED_FORMATS)


def markdown_table() -> str:
    """docs/reference/formats.md's table (tikka.tools.reference writes it)."""
    rows = ["| format | file endings | media types | decoded by | notes |", "|---|---|---|---|---|"]
    rows += [
        f"| {fmt.name} | {', '.join('.' + e for e in fmt.extensions)} | {', '.join(fmt.media_types)}"
        f" | {fmt.decoder} | {fmt.note} |"
        for fmt in ACCEPTED_FORMATS
    ]
    return "\n".join(rows)
