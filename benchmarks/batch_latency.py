#!/usr/bin/env python
"""Batch-size vs latency curve of the served classifier, the basis of the batching settings.

Measures the model alone (no HTTP), the same call the Classifier's batchable
method makes, for each batch size in one run, and writes a Markdown report
with ratios relative to batch 1 (absolute times on a shared 2-core box are noise).

    python benchmarks/batch_latency.py --model food-classifier:latest
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tikka.classifier import ImageClassifier  # noqa: E402


def measure(classifier: ImageClassifier, batch_size: int, repeats: int) -> list[float]:
    batch = np.random.default_rng(0).standard_normal(
        (batch_size, *classifier.input_shape()), dtype=np.float32
    )
    classifier.predict_proba(batch)  # warm-up for this shape
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        classifier.predict_proba(batch)
        timings.append(time.perf_counter() - started)
    return timings


def main() -> int:
    import bentoml

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="food-classifier:latest")
    parser.add_argument("--sizes", default="1,2,4,8,16,32")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--report", type=Path, default=ROOT / "benchmarks/reports/batch_latency.md")
    args = parser.parse_args()

    model = bentoml.models.get(args.model)
    classifier = ImageClassifier(model.path, args.device)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        timings = measure(classifier, size, args.repeats)
        median = statistics.median(timings)
        p90 = float(np.percentile(timings, 90))
        rows.append((size, median, p90, size / median))
        print(f"batch {size:3d}: median {median * 1000:7.1f} ms  p90 {p90 * 1000:7.1f} ms"
              f"  {size / median:6.1f} img/s", flush=True)

    base_latency, base_rate = rows[0][1], rows[0][3]
    lines = [
        "# Batch size vs latency (model only)",
        "",
        f"Model `{model.tag}` on {classifier.device} ({platform.machine()},"
        f" torch {torch.__version__}, {torch.get_num_threads()} threads), {args.repeats} runs"
        " per size, one process, same run.",
        "",
        "| batch | median ms | p90 ms | img/s | latency vs batch 1 | throughput vs batch 1 |",
        "|---|---|---|---|---|---|",
    ]
    for size, median, p90, rate in rows:
        lines.append(
            f"| {size} | {median * 1000:.1f} | {p90 * 1000:.1f} | {rate:.1f}"
            f" | {median / base_latency:.2f}x | {rate / base_rate:.2f}x |"
        )
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines) + "\n")
    print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
