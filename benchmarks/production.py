#!/usr/bin/env python
"""`make bench-production`: the production model's architecture served three ways, side by side.

The model is models/build_production_architecture.py's: SigLIP base patch16 224 with a
Food-101 head (random weights; the cost is the production model's, the answers are not).
Configurations, served at once and loaded one at a time, interleaved round by round:

- (a) plain FastAPI + uvicorn, torch and the transformers processor per request (the replaced server);
- (b) the same FastAPI server with the Bento's runtime and input path;
- (d) the Bento as shipped (the settings it runs with are in the report);
- (f) the Bento in one process (TIKKA_ONE_PROCESS), the single small VM's alternative;
- (e) the offline ceiling of the Bento's runtimes: decode, preprocessing and the model
  in a tight loop, no HTTP, at each batch size and thread count.

Each at 16 users (Locust, closed loop) and at idle (one request at a time), with time to
/readyz and PSS after the load. Writes benchmarks/REPORT-production.md. Absolute figures
on a shared 2-core box are noise; the ratios, measured in the same run, are the result.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench import (  # noqa: E402
    fastapi_server,
    locust,
    offline_ceiling,
    precision_gate,
    precision_gate_section,
    pss_mb,
    server_pid,
    single_latency_ms,
)
from benchmarks.photos import ensure_photos  # noqa: E402
from models.build_production_architecture import TAG  # noqa: E402
from tests.helpers import served_bento  # noqa: E402
from tikka.model.cpu import cpu_label  # noqa: E402

SERVED = {
    "a": "FastAPI, torch + transformers processor per request (replaced server)",
    "b": "FastAPI, the Bento's runtime and input path",
    "d": "Bento as shipped",
    "f": "Bento in one process (`TIKKA_ONE_PROCESS`: the classifier in the gateway's process, no batcher)",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=f"{TAG}:latest")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=30, help="each Locust run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--idle", type=int, default=10, help="requests one at a time, per configuration")
    parser.add_argument(
        "--bento-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for (d), e.g. TIKKA_MAX_LATENCY_MS=20000",
    )
    parser.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "REPORT-production.md")
    args = parser.parse_args()
    import bentoml

    model = bentoml.models.get(args.model)
    photos = {p.name: p.read_bytes() for p in ensure_photos()}
    out = Path(tempfile.mkdtemp(prefix="tikka-bench-production-"))
    bento_env = {"TIKKA_MODEL_TAG": str(model.tag), **dict(item.split("=", 1) for item in args.bento_env)}
    runs: dict[str, list[dict]] = {key: [] for key in SERVED}

    with contextlib.ExitStack() as stack:
        print("starting the servers", flush=True)
        started = time.perf_counter()
        bento = stack.enter_context(served_bento(out / "home-d", bento_env, timeout=600))
        readyz_s = time.perf_counter() - started
        served_runtime = httpx.get(f"{bento}/").json()["runtime"]["runtime"]
        urls = {
            "a": stack.enter_context(fastapi_server("stock", str(model.path)))[0],
            "b": stack.enter_context(fastapi_server("lean", str(model.path), bento_env.get("TIKKA_PRECISION", "auto")))[
                0
            ],
            "d": bento,
            "f": stack.enter_context(
                served_bento(out / "home-f", {**bento_env, "TIKKA_ONE_PROCESS": "true"}, timeout=600)
            ),
        }
        for url in urls.values():  # warm-up
            single_latency_ms(url, photos["pizza.jpg"], 3)
        idle = {key: single_latency_ms(url, photos["pizza.jpg"], args.idle) for key, url in urls.items()}
        print(f"idle ms: {idle}", flush=True)
        for round_ in range(args.rounds):
            for key, url in urls.items():
                result = locust(url, "samples", args.users, args.seconds, out)
                runs[key].append(result)
                print(f"round {round_ + 1} ({key}) {SERVED[key]}: {result}", flush=True)
        memory = {key: pss_mb(server_pid(url)) for key, url in urls.items()}
    print("offline ceiling", flush=True)
    ceiling = offline_ceiling(
        str(model.path), [photos[n] for n in ("pizza.jpg", "guacamole.jpg", "hamburger.jpg")], 8, served_runtime
    )

    rows = {key: {k: statistics.median(r[k] for r in results) for k in results[0]} for key, results in runs.items()}
    write_report(
        args, str(model.tag), bento_env, rows, idle, memory, ceiling, readyz_s, precision_gate(str(model.path))
    )
    print(f"report: {args.report}")
    return 0


def write_report(args, tag, bento_env, rows, idle, memory, ceiling, readyz_s, gate: dict) -> None:
    best = ceiling["best"]
    lines = [
        "# The production architecture, benchmarked",
        "",
        f"`make bench-production` on {time.strftime('%Y-%m-%d', time.gmtime())}: {cpu_label()}.",
        f"Model: `{tag}`, SigLIP base patch16 224 with a Food-101 head (random weights;"
        " models/build_production_architecture.py). Generated; do not edit by hand.",
        "",
        f"Load: {args.users} users, closed loop, {args.rounds} rounds of {args.seconds} s each, interleaved;"
        f" idle: {args.idle} requests one at a time. (d) ran with {', '.join(f'`{k}={v}`' for k, v in bento_env.items())}.",
        "",
        "| | configuration | answered req/s | p50 ms | p95 ms | errors | idle ms | PSS MB after load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    # Answered: req/s without the errors. A shed request (503, 429) is fast, so req/s that
    # counted it would reward shedding.
    ok = {
        key: row["rps"] * (1 - row["errors"] / row["requests"]) if row["requests"] else 0.0 for key, row in rows.items()
    }
    for key, name in SERVED.items():
        row = rows[key]
        lines.append(
            f"| ({key}) | {name} | {ok[key]:.2f} | {row['p50']:.0f} | {row['p95']:.0f} |"
            f" {row['errors']:.0f} of {row['requests']:.0f} | {idle[key]:.0f} | {sum(memory[key].values()):.0f} |"
        )
    lines += [
        f"| (e) | offline ceiling: {best['runtime']}, {best['threads']} threads, batch {best['batch']} |"
        f" {best['ips']:.2f} img/s | | | | {ceiling['per_image_ms']:.0f} (batch 1) | |",
        "",
        "Ratios, same run:",
        "",
        f"- (d) / (e), the share of the offline ceiling the Bento serves: **{ok['d'] / best['ips']:.2f}**",
        f"- (d) / (a), against the replaced server: **{ok['d'] / ok['a']:.2f}**",
        f"- (d) / (b), against plain FastAPI with the same runtime: **{ok['d'] / ok['b']:.2f}**",
        f"- (f) / (b), the one-process configuration against plain FastAPI: **{ok['f'] / ok['b']:.2f}**"
        f" ({ok['f'] / ok['d']:.2f}x (d))",
        f"- idle (d) / (e) batch 1: {idle['d'] / ceiling['per_image_ms']:.2f}",
        f"- time from `bentoml serve` to /readyz for (d): {readyz_s:.1f} s",
        "",
        "The offline ceiling, every runtime, thread count and batch size tried:",
        "",
        "| runtime | threads | batch | img/s |",
        "|---|---|---|---|",
        *(f"| {r['runtime']} | {r['threads']} | {r['batch']} | {r['ips']:.2f} |" for r in ceiling["all"]),
        "",
        "PSS by process after the load (MB): "
        + "; ".join(f"({k}) " + ", ".join(f"{role} {mb:.0f}" for role, mb in v.items()) for k, v in memory.items()),
        "",
        *precision_gate_section(gate),
    ]
    args.report.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
