#!/usr/bin/env python
"""Served throughput under concurrent load, for batching settings side by side in one run.

Starts a real `bentoml serve` per configuration (one after the other, on the
same machine, same photo, same client load), fires --requests uploads from
--concurrency clients, and writes a Markdown report with req/s, p50/p95 and the
mean adaptive batch size read from the Bento's own /metrics. Ratios are given
against the first configuration: absolute numbers on a shared 2-core box are noise.

    python benchmarks/served_batching.py --concurrency 16 --requests 160
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import metric_value, served_bento  # noqa: E402

CONFIGS = {
    "max_batch_size=2 (almost no batching)": {"TIKKA_MAX_BATCH_SIZE": "2"},
    "max_batch_size=8 (default)": {"TIKKA_MAX_BATCH_SIZE": "8"},
    "max_batch_size=16": {"TIKKA_MAX_BATCH_SIZE": "16"},
}


async def load(url: str, photo: bytes, concurrency: int, requests: int) -> tuple[list[float], Counter, float]:
    latencies: list[float] = []
    statuses: Counter = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            queue.get_nowait()
            started = time.perf_counter()
            response = await http.post(f"{url}/predict", files={"image": ("p.jpg", photo, "image/jpeg")})
            latencies.append(time.perf_counter() - started)
            statuses[response.status_code] += 1
            if response.status_code != 200 and statuses[response.status_code] == 1:
                print(f"  first {response.status_code}: {response.text[:300]}", flush=True)

    async with httpx.AsyncClient(timeout=120) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, statuses, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=160)
    parser.add_argument("--warmup", type=int, default=48)
    parser.add_argument("--photo", type=Path, default=ROOT / "tests/data/pizza.jpg")
    parser.add_argument("--report", type=Path, default=ROOT / "benchmarks/reports/served_batching.md")
    args = parser.parse_args()
    os.environ.setdefault("BENTOML_HOME", str(ROOT / ".bentoml"))
    photo = args.photo.read_bytes()

    rows = []
    for name, env in CONFIGS.items():
        with tempfile.TemporaryDirectory() as home, served_bento(Path(home), env) as url:
            asyncio.run(load(url, photo, args.concurrency, args.warmup))  # batcher cost model warm-up
            before = httpx.get(f"{url}/metrics").text
            latencies, statuses, elapsed = asyncio.run(load(url, photo, args.concurrency, args.requests))
            after = httpx.get(f"{url}/metrics").text
        batches = (metric_value(after, "bentoml_service_adaptive_batch_size_count", method_name="classify")
                   - metric_value(before, "bentoml_service_adaptive_batch_size_count", method_name="classify"))
        images = (metric_value(after, "bentoml_service_adaptive_batch_size_sum", method_name="classify")
                  - metric_value(before, "bentoml_service_adaptive_batch_size_sum", method_name="classify"))
        quantiles = statistics.quantiles(latencies, n=20)
        row = {
            "name": name, "rps": len(latencies) / elapsed, "p50": statistics.median(latencies),
            "p95": quantiles[18], "batch": images / batches if batches else 0.0,
            "failures": sum(n for status, n in statuses.items() if status != 200),
        }
        rows.append(row)
        print(f"{name}: {row['rps']:.1f} req/s, p50 {row['p50'] * 1000:.0f} ms, p95 {row['p95'] * 1000:.0f} ms,"
              f" mean batch {row['batch']:.2f}, statuses {dict(statuses)}", flush=True)

    base = rows[0]
    lines = [
        "# Served throughput by batching setting",
        "",
        f"`bentoml serve` per row, one after the other in one run on {platform.machine()} ({os.cpu_count()} cores);"
        f" {args.concurrency} concurrent clients, {args.requests} uploads of `{args.photo.name}` each, after"
        f" {args.warmup} warm-up requests. Mean batch size from `bentoml_service_adaptive_batch_size`.",
        "",
        "| configuration | req/s | p50 ms | p95 ms | mean batch | failures | req/s vs first | p95 vs first |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['rps']:.1f} | {row['p50'] * 1000:.0f} | {row['p95'] * 1000:.0f}"
            f" | {row['batch']:.2f} | {row['failures']} | {row['rps'] / base['rps']:.2f}x"
            f" | {row['p95'] / base['p95']:.2f}x |"
        )
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines) + "\n")
    print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
