"""The load-test photo set: the sample photos at mixed sizes, generated, never committed.

Phone photos are 3000-4000 px JPEGs; web uploads are 640-1280 px. The set is
made from the three sample photos in tests/data (upscaled with Lanczos, saved at
a phone camera's JPEG quality), so it needs no download and is the same anywhere.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "data"
PHOTO_DIR = ROOT / "benchmarks" / "photos"

# (sample, long side in px or None for the original, JPEG quality)
RECIPE: list[tuple[str, int | None, int]] = [
    ("pizza.jpg", None, 0),
    ("guacamole.jpg", None, 0),
    ("hamburger.jpg", None, 0),
    ("pizza.jpg", 1280, 90),
    ("guacamole.jpg", 1600, 90),
    ("hamburger.jpg", 2048, 90),
    ("pizza.jpg", 4000, 92),
    ("guacamole.jpg", 4000, 92),
    ("hamburger.jpg", 3000, 92),
]


def photo_name(sample: str, long_side: int | None) -> str:
    stem = Path(sample).stem
    return f"{stem}.jpg" if long_side is None else f"{stem}-{long_side}.jpg"


def ensure_photos(directory: Path = PHOTO_DIR) -> list[Path]:
    """Write the set into ``directory`` (once); return its paths, smallest first."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for sample, long_side, quality in RECIPE:
        path = directory / photo_name(sample, long_side)
        if not path.exists():
            if long_side is None:
                path.write_bytes((SAMPLES / sample).read_bytes())
            else:
                image = Image.open(SAMPLES / sample).convert("RGB")
                scale = long_side / max(image.size)
                size = (round(image.width * scale), round(image.height * scale))
                image.resize(size, Image.Resampling.LANCZOS).save(path, "JPEG", quality=quality)
        paths.append(path)
    return sorted(paths, key=lambda p: p.stat().st_size)


if __name__ == "__main__":
    for path in ensure_photos():
        with Image.open(path) as image:
            print(f"{path.relative_to(ROOT)}: {image.width}x{image.height}, {path.stat().st_size // 1024} KB")
