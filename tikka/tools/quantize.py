"""Reduced precisions of the exported graph, made at import and kept only behind an agreement gate.

- **int8**: NNCF's post-training quantization of the ONNX graph for OpenVINO, calibrated on
  images the project has (below); written as ``model_int8.xml``/``.bin`` beside ``model.onnx``.
- **bf16**: the same graph with OpenVINO's bf16 inference precision. Nothing to write, but it
  is gated the same way, measured on the import CPU when that CPU has bf16 (on one without,
  OpenVINO would run fp32 and the gate would prove nothing).

Each is compared with fp32 on a held-out set: at least ``MIN_TOP1_AGREEMENT`` of the top-1
labels the same, and, where the graph explains, the explanation maps correlated at least
``MIN_EXPLANATION_CORRELATION``. ``precision_gate.json`` records each figure, the largest
probability difference, and the sets. A precision that fails is not offered: its int8 graph
is deleted, and the start-up choice (tikka/model/runtime.py) reads the gate.

The images: the sample photos (tests/data) under augmentations a camera produces (crops,
flips, colour and brightness, JPEG quality); calibration adds generated images (smooth
random colour fields), for activation ranges beyond three dishes. The held-out set has no
generated images: their top-1 is a near-tie between arbitrary classes, which says nothing
about a dish photo (with them, bf16 agreed on 98.8% here, and on 100% of photos). The two
sets come from different random seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from tikka.model.checkpoint import GATE_FILE, INT8_FILE, ONNX_FILE, Checkpoint
from tikka.model.cpu import cpu_has_bf16, cpu_label
from tikka.model.imaging import InputSpec
from tikka.model.runtime import GraphClassifier, graph_candidates

logger = logging.getLogger(__name__)

MIN_TOP1_AGREEMENT = 0.99
MIN_EXPLANATION_CORRELATION = 0.9
CALIBRATION_IMAGES = 128  # NNCF's statistics settle well before its default 300; SigLIP-B/16 took ~1.5 s each
HELD_OUT_IMAGES = 256
GENERATED_SHARE = 0.2
PHOTOS = Path(__file__).resolve().parents[2] / "tests" / "data"  # in the checkout the import runs from


@dataclass(frozen=True)
class Agreement:
    """How a reduced precision's outputs compare with fp32's on the held-out set."""

    top1_agreement: float
    max_probability_difference: float
    explanation_correlation: float | None  # mean Pearson correlation of the maps; None: no explanation

    @property
    def passed(self) -> bool:
        return self.top1_agreement >= MIN_TOP1_AGREEMENT and (
            self.explanation_correlation is None or self.explanation_correlation >= MIN_EXPLANATION_CORRELATION
        )


def agreement(
    reference: tuple[np.ndarray, np.ndarray | None], candidate: tuple[np.ndarray, np.ndarray | None]
) -> Agreement:
    """``reference`` and ``candidate``: (probabilities (N, classes), explanation maps (N, h, w) or None)."""
    (ref_probs, ref_maps), (probs, maps) = reference, candidate
    correlation = None
    if ref_maps is not None and maps is not None:
        a, b = ref_maps.reshape(len(ref_maps), -1), maps.reshape(len(maps), -1)
        a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
        denominator = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        # A flat map (all zeros) against another flat one is the same map.
        per_image = np.where(denominator > 0, (a * b).sum(1) / np.maximum(denominator, 1e-12), 1.0)
        correlation = round(float(per_image.mean()), 4)
    return Agreement(
        top1_agreement=round(float((ref_probs.argmax(1) == probs.argmax(1)).mean()), 4),
        max_probability_difference=round(float(np.abs(ref_probs - probs).max()), 4),
        explanation_correlation=correlation,
    )


def augmented(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    width, height = photo.size
    scale = rng.uniform(0.5, 1.0)
    crop_w, crop_h = int(width * scale), int(height * scale)
    left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
    image = photo.crop((left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.4))
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(30, 95)))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def generated(rng: np.random.Generator, size: int = 256) -> Image.Image:
    """A smooth random colour field: blurred noise, upscaled."""
    noise = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    return Image.fromarray(noise).resize((size, size), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(4))


def image_set(
    spec: InputSpec, count: int, seed: int, photos_dir: Path = PHOTOS, generated_share: float = 0.0
) -> np.ndarray:
    """``count`` images as the classifier receives them: uint8 (count, H, W, 3)."""
    rng = np.random.default_rng(seed)
    photos = [Image.open(path).convert("RGB") for path in sorted(photos_dir.glob("*.jpg"))]
    images = []
    for index in range(count):
        if not photos or rng.random() < generated_share:
            images.append(generated(rng))
        else:
            images.append(augmented(photos[index % len(photos)], rng))
    return np.stack([spec.preprocess(image) for image in images])


def outputs(classifier: GraphClassifier, images: np.ndarray, batch: int = 8) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities and, where the graph has them, explanation maps, for every image."""
    results = [classifier.predict_with_maps(images[start : start + batch]) for start in range(0, len(images), batch)]
    maps = [m for _, m in results if m is not None]
    return np.concatenate([p for p, _ in results]), (np.concatenate(maps) if maps else None)


def quantize_int8(model_path: Path, calibration: np.ndarray) -> Path:
    import nncf
    import openvino

    model = openvino.Core().read_model(str(model_path / ONNX_FILE))
    transformer = Checkpoint.read(model_path).explain_method == "attention-rollout"
    # NNCF draws its progress bars on stdout; the import scripts' stdout is their report.
    with contextlib.redirect_stdout(sys.stderr):
        quantized = nncf.quantize(
            model,
            nncf.Dataset([image[None] for image in calibration]),
            subset_size=len(calibration),
            # Transformers keep their softmax and layer norms in float: NNCF's preset for them.
            model_type=nncf.ModelType.TRANSFORMER if transformer else None,
        )
    target = model_path / INT8_FILE
    openvino.save_model(quantized, str(target))
    return target


def gate_reduced_precisions(model_path: str | Path, photos_dir: Path = PHOTOS) -> dict:
    """Make and gate each reduced precision; write and return ``precision_gate.json``'s content."""
    model_path = Path(model_path)
    spec = Checkpoint.read(model_path).input_spec
    held_out = image_set(spec, HELD_OUT_IMAGES, seed=1, photos_dir=photos_dir)
    reference = outputs(GraphClassifier(model_path, "openvino"), held_out)
    report: dict = {
        "thresholds": {"top1_agreement": MIN_TOP1_AGREEMENT, "explanation_correlation": MIN_EXPLANATION_CORRELATION},
        "held_out": f"{HELD_OUT_IMAGES} augmented sample photos, seed 1",
        "calibration": f"{CALIBRATION_IMAGES} images, seed 0: augmented sample photos and {GENERATED_SHARE:.0%} generated",
        "measured_on": cpu_label(),
        "machine": platform.machine(),  # the start-up choice offers what passed on this architecture only
    }
    try:
        calibration = image_set(
            spec, CALIBRATION_IMAGES, seed=0, photos_dir=photos_dir, generated_share=GENERATED_SHARE
        )
        quantize_int8(model_path, calibration)
        report["int8"] = gated(reference, GraphClassifier(model_path, "openvino-int8"), held_out)
    except Exception as exc:  # NNCF or OpenVINO could not quantize this graph: fp32 it is
        report["int8"] = {"passed": False, "error": f"{type(exc).__name__}: {exc}"}
    if not report["int8"]["passed"]:
        for suffix in (".xml", ".bin"):
            (model_path / INT8_FILE).with_suffix(suffix).unlink(missing_ok=True)
    if cpu_has_bf16():
        report["bf16"] = gated(reference, GraphClassifier(model_path, "openvino-bf16"), held_out)
    else:
        report["bf16"] = {"passed": False, "error": "the import CPU has no bf16 instructions: not measured"}
    (model_path / GATE_FILE).write_text(json.dumps(report, indent=1))
    logger.info("precision gate for %s: %s", model_path.name, {name: report[name] for name in ("int8", "bf16")})
    return report


def gated(reference, candidate, held_out: np.ndarray) -> dict:
    result = agreement(reference, outputs(candidate, held_out))
    return {"passed": result.passed, **asdict(result)}


def check_agreement(model_path: str | Path, count: int = HELD_OUT_IMAGES, every: bool = False) -> dict[str, dict]:
    """The reduced precisions against fp32 on this machine, on the first ``count`` images of
    the held-out set: the gate again where the model serves, not where it was imported. By
    default those this machine would serve (``graph_candidates``); ``every``: each one the
    model has (the int8 graph; bf16 where this CPU has it), offered here or not.

    The Bento leaves tikka/tools out, so in an image this runs from a mounted checkout;
    `make test-images` runs it in the emulated arm64 image (docs/architecture.md)."""
    model_path = Path(model_path)
    if every:
        names = [
            *(["openvino-bf16"] if cpu_has_bf16() else []),
            *(["openvino-int8"] if (model_path / INT8_FILE).is_file() else []),
        ]
    else:
        names = [name for name in graph_candidates(model_path, "openvino") if name != "openvino"]
    held_out = image_set(Checkpoint.read(model_path).input_spec, count, seed=1)
    reference = outputs(GraphClassifier(model_path, "openvino"), held_out)
    return {name: gated(reference, GraphClassifier(model_path, name), held_out) for name in names}


def main(argv: list[str] | None = None) -> int:
    """Prints the check as one JSON line; fails if a precision this machine serves did not pass."""
    parser = argparse.ArgumentParser(prog="python -m tikka.tools.quantize", description=main.__doc__)
    parser.add_argument("images", type=int, nargs="?", default=HELD_OUT_IMAGES)
    parser.add_argument(
        "model",
        type=Path,
        nargs="?",
        help="a model directory (e.g. the one a Bento image carries); default: TIKKA_MODEL_TAG in the store",
    )
    parser.add_argument("--every", action="store_true", help="also the reduced precisions not offered here")
    args = parser.parse_args(argv)
    model_path = args.model
    if model_path is None:
        import bentoml

        from tikka.settings import get_settings

        model_path = Path(bentoml.models.get(get_settings().model_tag).path)
    started = time.monotonic()
    results = check_agreement(model_path, args.images, args.every)
    offered = set(graph_candidates(model_path, "openvino"))
    print(
        json.dumps(
            {
                "cpu": cpu_label(),
                "model": f"{model_path.parent.name}:{model_path.name}",
                "images": args.images,
                "seconds": round(time.monotonic() - started),
                "offered here": sorted(offered - {"openvino"}),
                **results,
            }
        )
    )
    return 0 if all(result["passed"] for name, result in results.items() if name in offered) else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
