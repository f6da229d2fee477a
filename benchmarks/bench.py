#!/usr/bin/env python
"""`make bench`: the Bento against the plain FastAPI server it replaces, side by side in one run.

Configurations, all served at once on this machine and loaded one at a time,
interleaved round by round (so that a noisy minute hits every one alike):

- (a) plain FastAPI + uvicorn: torch per request, full decode, stock processor;
- (b) the same FastAPI server with the Bento's runtime and input path;
- (c) the Bento with adaptive batching off;
- (d) the Bento as shipped;
- (f) the Bento in one process (TIKKA_ONE_PROCESS), the single small VM's alternative;
- (e) the offline ceiling: decode, preprocessing and the model in a tight loop,
  no HTTP, at its best batch size and thread split.

Load: Locust (locustfile.py), headless, closed loop (no think time), predict
only. Writes benchmarks/REPORT.md and benchmarks/report.png. Absolute figures
on a shared 2-core box are noise; the ratios, measured in the same run, are the result.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.photos import ensure_photos  # noqa: E402
from tests.helpers import SidecarProcess, listening_port, served_bento, wait_ready  # noqa: E402

SAMPLES = ["pizza.jpg", "guacamole.jpg", "hamburger.jpg"]
SERVED = {
    "a": "FastAPI, torch per request (replaced server)",
    "b": "FastAPI, Bento's runtime and input path",
    "c": "Bento, batching off",
    "d": "Bento as shipped",
    "f": "Bento in one process (`TIKKA_ONE_PROCESS`: the classifier in the gateway's process, no batcher)",
}


@contextlib.contextmanager
def fastapi_server(pipeline: str, model_path: str, precision: str = "auto"):
    env = {**os.environ, "BENCH_MODEL_PATH": model_path, "BENCH_PIPELINE": pipeline, "TIKKA_PRECISION": precision}
    log_path = Path(tempfile.mkdtemp()) / "uvicorn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "benchmarks.fastapi_server:app", "--port", "0", "--log-level", "warning"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{listening_port(process)}"
        wait_ready(url, process, log_path, 120, path="/health")
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def server_pid(url: str) -> int:
    """The pid listening on the URL's port (the `bentoml serve` supervisor, or uvicorn)."""
    port = int(url.rsplit(":", 1)[1])
    for connection in psutil.net_connections("tcp"):
        if connection.laddr and connection.laddr.port == port and connection.status == "LISTEN" and connection.pid:
            return connection.pid
    raise RuntimeError(f"nobody listens on {port}")


def pss_mb(pid: int) -> dict[str, float]:
    """PSS of a server's whole process tree (from the `bentoml serve` supervisor down), by role."""
    root = psutil.Process(pid)
    while (parent := root.parent()) and "bentoml" in " ".join(parent.cmdline()):
        root = parent
    result = {}
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            command = " ".join(process.cmdline())
            role = (
                "classifier"
                if "--service-name classifier" in command
                else "gateway"
                if "_bentoml_impl.worker" in command
                else "supervisor"
                if "bentoml" in command
                else process.name()
            )
            result[role] = result.get(role, 0) + process.memory_full_info().pss / 2**20
    return result


def locust(url: str, photos: str, users: int, seconds: int, out: Path) -> dict:
    prefix = out / f"run-{time.monotonic_ns()}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(ROOT / "locustfile.py"),
            "--headless",
            "--host",
            url,
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{seconds}s",
            "--think-time",
            "0",
            "--photos",
            photos,
            "--csv",
            str(prefix),
            "--only-summary",
            "--loglevel",
            "WARNING",
            "PredictUser",
        ],
        cwd=ROOT,
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with open(f"{prefix}_stats.csv") as fh:
        row = next(r for r in csv.DictReader(fh) if r["Name"] == "Aggregated")
    return {
        "rps": float(row["Requests/s"]),
        "p50": float(row["50%"]),
        "p95": float(row["95%"]),
        "p99": float(row["99%"]),
        "requests": int(row["Request Count"]),
        "errors": int(row["Failure Count"]),
    }


def single_latency_ms(url: str, photo: bytes, count: int) -> float:
    timings = []
    with httpx.Client(timeout=60) as http:
        for _ in range(count):
            started = time.perf_counter()
            response = http.post(f"{url}/predict", files={"image": ("p.jpg", photo, "image/jpeg")})
            timings.append(time.perf_counter() - started)
            response.raise_for_status()
    return statistics.median(timings) * 1000


def offline_ceiling(model_path: str, photos: list[bytes], seconds: float, served: str = "openvino") -> dict:
    """Decode + preprocessing in one thread, the model on the batch before: the best of each split.
    ``served``: the runtime the Bento chose (its / says), whose best row is the ceiling."""
    from tikka.model.checkpoint import Checkpoint
    from tikka.model.imaging import decode_upload
    from tikka.model.runtime import GraphClassifier, graph_candidates

    spec = Checkpoint.read(model_path).input_spec

    def prepare(data: bytes) -> np.ndarray:
        return spec.preprocess(decode_upload(data, max_pixels=40_000_000, draft_size=spec.draft_size))

    def prepare_batch(start: int, size: int) -> np.ndarray:
        return np.stack([prepare(photos[(start + k) % len(photos)]) for k in range(size)])

    results = []
    # Every runtime and precision the start-up choice may time here, at 2 threads; OpenVINO fp32 at 1 too.
    splits = [("openvino", 1), *((name, 2) for name in graph_candidates(Path(model_path)))]
    for runtime, threads in splits:
        classifier = GraphClassifier(Path(model_path), runtime, "cpu", threads)
        for batch in (1, 4, 8):
            with ThreadPoolExecutor(1) as pool:
                count, started, i = 0, time.perf_counter(), 0
                pending = pool.submit(prepare_batch, i, batch)
                while time.perf_counter() - started < seconds:
                    ready = pending.result()
                    i += batch
                    pending = pool.submit(prepare_batch, i, batch)
                    classifier.predict_proba(ready)
                    count += batch
                results.append(
                    {
                        "runtime": runtime,
                        "threads": threads,
                        "batch": batch,
                        "ips": count / (time.perf_counter() - started),
                    }
                )
    classifier = GraphClassifier(Path(model_path), served, "cpu")
    timings = []
    for n in range(60):
        started = time.perf_counter()
        classifier.predict_proba(prepare(photos[n % len(photos)])[None])
        timings.append(time.perf_counter() - started)
    best = max((r for r in results if r["runtime"] == classifier.runtime), key=lambda r: r["ips"])
    return {"best": best, "all": results, "per_image_ms": statistics.median(timings) * 1000}


def llm_stream(url: str, path: str, payload: dict) -> tuple[float, float, int]:
    """(time to first token s, tokens/s after it, tokens) of one streamed generation."""
    started = time.perf_counter()
    first = None
    tokens = 0
    final = {}
    with httpx.stream("POST", f"{url}{path}", json=payload, timeout=120) as response:
        for line in response.iter_lines():
            if not line:
                continue
            record = json.loads(line)
            if record.get("response") and first is None:
                first = time.perf_counter()
            if record.get("done"):
                final = record
    ended = time.perf_counter()
    tokens = int(final.get("eval_count", 0))
    first = first or ended
    return first - started, (tokens - 1) / max(ended - first, 1e-9), tokens


def llm_section(bento: str, sidecar: str, runs: int) -> dict:
    prompt = "Here is a simple recipe for guacamole.\n\nIngredients:\n-"
    results = {"bento": [], "sidecar": []}
    for _ in range(runs):  # interleaved, like the classifier rows
        results["sidecar"].append(
            llm_stream(
                sidecar,
                "/api/generate",
                {
                    "model": "gemma3:270m",
                    "prompt": prompt,
                    "stream": True,
                    "options": {"temperature": 0, "num_predict": 64},
                },
            )
        )
        results["bento"].append(
            llm_stream(bento, "/llm/generate", {"prompt": prompt, "temperature": 0, "max_tokens": 64, "stream": True})
        )
    return {
        name: {"ttft_ms": statistics.median(r[0] for r in rows) * 1000, "tps": statistics.median(r[1] for r in rows)}
        for name, rows in results.items()
    }


def readyz_seconds(model_home: Path) -> float:
    """From `bentoml serve` to /readyz 200, in a fresh home."""
    with tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()
        with served_bento(Path(home), store=model_home):
            return time.perf_counter() - started


def streamlit_pss(api_url: str) -> float:
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "streamlit"),
            "run",
            "app.py",
            "--server.port",
            "0",
            "--server.headless",
            "true",
        ],
        cwd=ROOT / "frontend",
        env={**os.environ, "TIKKA_API_URL": api_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{listening_port(process, 60)}"
        wait_ready(url, process, None, 60, path="/_stcore/health")
        httpx.get(f"{url}/", timeout=10)
        time.sleep(2)
        return sum(pss_mb(process.pid).values())
    finally:
        process.terminate()
        process.wait(timeout=30)


def chart(rows: dict, ceiling: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(
        names + ["e"],
        [rows[n]["rps"] for n in names] + [ceiling],
        color=["#999", "#69c", "#9c6", "#e63", "#c6c", "#ccc"],
    )
    left.set_title("Throughput at 16 users (req/s; e: offline img/s)")
    x = np.arange(len(names))
    for offset, key in ((-0.25, "p50"), (0, "p95"), (0.25, "p99")):
        right.bar(x + offset, [rows[n][key] for n in names], width=0.25, label=key)
    right.set_xticks(x, names)
    right.set_title("Latency at 16 users (ms)")
    right.legend()
    fig.suptitle("; ".join(f"{k}: {v}" for k, v in SERVED.items()), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=20, help="each Locust run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "REPORT.md")
    args = parser.parse_args()
    import bentoml

    model = bentoml.models.get("food-classifier:latest")
    model_path = str(model.path)
    store = Path(os.environ["BENTOML_HOME"]) / "models"
    photos = {p.name: p.read_bytes() for p in ensure_photos()}
    out = Path(tempfile.mkdtemp(prefix="tikka-bench-"))
    runs: dict[str, list[dict]] = {key: [] for key in SERVED}
    mixed: dict[str, dict] = {}
    sidecar = SidecarProcess().start()  # llama.cpp at its default thread count, as `make serve` runs it

    with contextlib.ExitStack() as stack:
        print("starting the servers", flush=True)
        readyz = readyz_seconds(store)
        urls = {
            "a": stack.enter_context(fastapi_server("stock", model_path))[0],
            "b": stack.enter_context(fastapi_server("lean", model_path))[0],
            "c": stack.enter_context(served_bento(out / "home-c", {"TIKKA_ADAPTIVE_BATCHING": "false"})),
            "d": stack.enter_context(served_bento(out / "home-d", {"OLLAMA_HOST": sidecar.url})),
            "f": stack.enter_context(served_bento(out / "home-f", {"TIKKA_ONE_PROCESS": "true"})),
        }
        for url in urls.values():  # warm-up: the batcher's cost model, lazy inits
            single_latency_ms(url, photos["pizza.jpg"], 5)
            locust(url, "samples", args.users, 5, out)
        idle = {key: single_latency_ms(url, photos["pizza.jpg"], 30) for key, url in urls.items()}
        for round_ in range(args.rounds):
            for key, url in urls.items():
                result = locust(url, "samples", args.users, args.seconds, out)
                runs[key].append(result)
                print(f"round {round_ + 1} ({key}) {SERVED[key]}: {result}", flush=True)
        for key in ("a", "d"):
            mixed[key] = locust(urls[key], "mixed", args.users, args.seconds, out)
            print(f"mixed photos ({key}): {mixed[key]}", flush=True)
        large = {name: single_latency_ms(urls["d"], photos[name], 15) for name in ("pizza.jpg", "pizza-4000.jpg")}
        memory = {key: pss_mb(server_pid(url)) for key, url in urls.items()}
        sidecar_pss = sum(pss_mb(sidecar.process.pid).values())
        frontend_pss = streamlit_pss(urls["d"])
        llm = llm_section(urls["d"], sidecar.url, 3)
        served_runtime = httpx.get(f"{urls['d']}/").json()["runtime"]["runtime"]
    sidecar.stop()
    print("offline ceiling", flush=True)
    ceiling = offline_ceiling(model_path, [photos[n] for n in SAMPLES], 4, served_runtime)

    rows = {key: {k: statistics.median(r[k] for r in results) for k in results[0]} for key, results in runs.items()}
    write_report(
        args,
        rows,
        runs,
        mixed,
        idle,
        large,
        memory,
        sidecar_pss,
        frontend_pss,
        llm,
        ceiling,
        readyz,
        precision_gate(model_path),
    )
    chart(rows, ceiling["best"]["ips"], args.report.with_name("report.png"))
    print(f"report: {args.report}")
    return 0


def precision_gate(model_path: str) -> dict:
    path = Path(model_path) / "precision_gate.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def precision_gate_section(gate: dict) -> list[str]:
    """The model's agreement gate at import (tikka/tools/quantize.py), as a report section."""
    return [
        "## Reduced precisions: the agreement gate at import",
        "",
        f"`precision_gate.json` of the model, measured on {gate.get('measured_on', 'the import machine')}:"
        f" {gate.get('held_out', '')}; thresholds {gate.get('thresholds', {})}.",
        "",
        "| precision | passed | top-1 agreement with fp32 | largest probability difference | explanation correlation |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {result.get('passed')} | {result.get('top1_agreement', '')} |"
            f" {result.get('max_probability_difference', '')} | {result.get('explanation_correlation', result.get('error', ''))} |"
            for name, result in ((n, gate.get(n, {})) for n in ("int8", "bf16"))
        ),
        "",
    ]


def write_report(
    args, rows, runs, mixed, idle, large, memory, sidecar_pss, frontend_pss, llm, ceiling, readyz, gate: dict
) -> None:
    d, a, b, f, e = rows["d"], rows["a"], rows["b"], rows["f"], ceiling["best"]["ips"]
    stack_pss = sum(memory["d"].values()) + sidecar_pss + frontend_pss
    verdict = lambda ok: "met" if ok else "**not met**"  # noqa: E731
    lines = [
        "# Benchmark report: the Bento against the plain FastAPI server",
        "",
        f"`make bench`, one run on {platform.machine()} with {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}."
        f" Locust, {args.users} users, closed loop, `/predict` only, the three sample photos (400-640 px);"
        f" {args.rounds} rounds of {args.seconds} s per configuration, interleaved; the table gives the median of the rounds."
        " All five servers run at once and are loaded one at a time. Model: EfficientNet-Lite0 (224 px),"
        f" the exported ONNX graph; (d) served it on {ceiling['best']['runtime']}, the runtime and precision"
        " it measured fastest at start-up (its `/`); (b) makes the same choice on its own; (e) is that runtime's best.",
        "",
        "| configuration | req/s | p50 ms | p95 ms | p99 ms | errors | requests |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, name in SERVED.items():
        r = rows[key]
        lines.append(
            f"| ({key}) {name} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f}"
            f" | {sum(x['errors'] for x in runs[key])} | {sum(x['requests'] for x in runs[key])} |"
        )
    best = ceiling["best"]
    lines += [
        f"| (e) offline ceiling ({best['runtime']}, batch {best['batch']}, {best['threads']} runtime threads + 1 decode thread) | {e:.1f} img/s | | | | | |",
        "",
        "Each round, req/s: " + "; ".join(f"({k}) " + ", ".join(f"{x['rps']:.1f}" for x in runs[k]) for k in SERVED),
        "",
        "## Ratios and targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| (d) >= 3x (a) req/s at {args.users} users, p95 no worse | {d['rps'] / a['rps']:.2f}x, p95 {d['p95']:.0f} vs {a['p95']:.0f} ms"
        f" | {verdict(d['rps'] >= 3 * a['rps'] and d['p95'] <= a['p95'])} |",
        f"| (d) >= (b) req/s | {d['rps'] / b['rps']:.2f}x | {verdict(d['rps'] >= b['rps'])} |",
        f"| the one-process configuration: (f) >= (b) req/s | {f['rps'] / b['rps']:.2f}x ({f['rps'] / d['rps']:.2f}x (d));"
        f" idle {idle['f']:.1f} vs {idle['b']:.1f} ms | {verdict(f['rps'] >= b['rps'])} |",
        f"| (d) >= 80% of (e) | {d['rps'] / e:.0%} | {verdict(d['rps'] >= 0.8 * e)} |",
        f"| idle single request <= 1.5x offline per-image time | {idle['d']:.1f} ms vs {ceiling['per_image_ms']:.1f} ms"
        f" = {idle['d'] / ceiling['per_image_ms']:.2f}x | {verdict(idle['d'] <= 1.5 * ceiling['per_image_ms'])} |",
        f"| 4000x2500 JPEG < 3x a 640 px one (idle, through (d)) | {large['pizza-4000.jpg']:.1f} vs {large['pizza.jpg']:.1f} ms"
        f" = {large['pizza-4000.jpg'] / large['pizza.jpg']:.2f}x | {verdict(large['pizza-4000.jpg'] < 3 * large['pizza.jpg'])} |",
        f"| /readyz within 10 s of `bentoml serve` | {readyz:.1f} s | {verdict(readyz <= 10)} |",
        f"| LLM through the Bento >= 90% of the sidecar's tokens/s | {llm['bento']['tps']:.1f} vs {llm['sidecar']['tps']:.1f} tok/s"
        f" = {llm['bento']['tps'] / llm['sidecar']['tps']:.0%} | {verdict(llm['bento']['tps'] >= 0.9 * llm['sidecar']['tps'])} |",
        f"| local stack (Bento, sidecar, front end) < 1.5 GB PSS | {stack_pss:.0f} MB | {verdict(stack_pss < 1536)} |",
        "",
        "## Large photos",
        "",
        f"The same load with the mixed photo set (locustfile.py: 400 px to 4000 px JPEGs): (a) {mixed['a']['rps']:.1f} req/s,"
        f" p95 {mixed['a']['p95']:.0f} ms; (d) {mixed['d']['rps']:.1f} req/s, p95 {mixed['d']['p95']:.0f} ms"
        f" ({mixed['d']['rps'] / mixed['a']['rps']:.2f}x). Errors: (a) {mixed['a']['errors']}, (d) {mixed['d']['errors']}.",
        "",
        "## Idle single request (median of 30, pizza.jpg)",
        "",
        "| configuration | ms |",
        "|---|---|",
        *[f"| ({k}) {SERVED[k]} | {idle[k]:.1f} |" for k in SERVED],
        f"| offline, decode + preprocessing + model, one image | {ceiling['per_image_ms']:.1f} |",
        "",
        "## Offline ceiling by split (img/s)",
        "",
        "Decode and preprocessing in one thread, the model on the previous batch in the other;"
        f" (e) is the best {ceiling['best']['runtime']} row (the runtime the Bento chose here).",
        "",
        "| runtime | runtime threads | batch | img/s |",
        "|---|---|---|---|",
        *[f"| {r['runtime']} | {r['threads']} | {r['batch']} | {r['ips']:.1f} |" for r in ceiling["all"]],
        "",
        "## Memory (PSS, MB, after the load)",
        "",
        "| configuration | processes |",
        "|---|---|",
        *[
            f"| ({k}) {SERVED[k]} | "
            + ", ".join(f"{role} {mb:.0f}" for role, mb in memory[k].items())
            + f" (total {sum(memory[k].values()):.0f}) |"
            for k in SERVED
        ],
        f"| LLM sidecar (llama.cpp, Gemma 3 270M) | {sidecar_pss:.0f} |",
        f"| Streamlit front end, one page served | {frontend_pss:.0f} |",
        "",
        "## LLM: through the Bento against the sidecar directly",
        "",
        "Streamed, 64 tokens, temperature 0, median of 3 interleaved runs each.",
        "",
        "| path | time to first token ms | tokens/s |",
        "|---|---|---|",
        f"| sidecar `/api/generate` | {llm['sidecar']['ttft_ms']:.0f} | {llm['sidecar']['tps']:.1f} |",
        f"| Bento `/llm/generate` | {llm['bento']['ttft_ms']:.0f} | {llm['bento']['tps']:.1f} |",
        "",
        "![throughput and latency](report.png)",
        "",
        "## Not measured here",
        "",
        "- The production model's architecture (SigLIP-B/16) has reports of its own: `make bench-production` writes"
        " REPORT-production.md (at the precision the start-up choice serves) and REPORT-production-fp32.md"
        " (fp32, as the arm64 image serves it).",
        "- GPU: no GPU was lent to the run that wrote this report. On a GPU the graph runs on ONNX Runtime's"
        " CUDA provider or OpenVINO's GPU device (`TIKKA_DEVICE`), where batching should pay several times over.",
        "",
        *precision_gate_section(gate),
    ]
    args.report.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
