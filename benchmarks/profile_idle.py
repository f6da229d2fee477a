#!/usr/bin/env python
"""`make profile`: where an idle /predict's milliseconds go, sampled with py-spy.

Serves the Bento as shipped, sends photos one at a time (no concurrency: the idle case),
and samples the gateway's and the classifier's processes with py-spy meanwhile. Each
sample is put in the category of the innermost frame that names one (the model, image
decoding, the multipart parsing, BentoML's call to the classifier, HTTP, the middlewares),
and each category's time is given per request. Writes benchmarks/PROFILE.md.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import SERVED, served_bento  # noqa: E402
from tikka.model.cpu import cpu_label  # noqa: E402

RATE = 500  # samples per second
# (category, pattern on a frame "function (file:line)"), innermost first wins.
CATEGORIES = [
    ("waiting in the event loop (epoll: no CPU)", r"EpollSelector\.select|Condition\.wait"),
    ("socket sends (the kernel's time)", r"_write_to_self|Transport\.write"),
    ("model (the runtime's inference)", r"openvino|onnxruntime|predict_proba|predict_with_maps"),
    ("image decode and preprocessing (Pillow)", r"PIL/|tikka/model/imaging\.py"),
    ("multipart parsing (Starlette, python-multipart)", r"formparsers|multipart"),
    ("BentoML: the call to the classifier and its serialisation", r"_bentoml_impl/client|serde|pickle|aiohttp"),
    ("BentoML: batching and dispatch", r"marshal/dispatcher|batch"),
    ("the upload guard and other middlewares", r"tikka/http/"),
    ("the API function and the gateway", r"tikka/services\.py|service\.py"),
    ("HTTP server (uvicorn, h11, Starlette routing)", r"uvicorn|h11|starlette"),
    ("metrics (prometheus_client)", r"prometheus_client"),
    ("asyncio and anyio", r"asyncio|anyio"),
]


def category(stack: list[str]) -> str:
    for frame in reversed(stack):  # innermost last in py-spy's collapsed stacks
        for name, pattern in CATEGORIES:
            if re.search(pattern, frame):
                return name
    return "other"


def roles(url: str) -> dict[str, int]:
    """The gateway's and the classifier's worker pids."""
    found = {}
    for process in psutil.Process(SERVED[url].pid).children(recursive=True):
        cmdline = " ".join(process.cmdline())
        for role in ("classifier", "tikka"):
            if f"service-name {role}" in cmdline or f"service_name={role}" in cmdline:
                found["gateway" if role == "tikka" else role] = process.pid
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "PROFILE.md")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    photo = (ROOT / "tests" / "data" / "pizza.jpg").read_bytes()
    out = Path(tempfile.mkdtemp(prefix="tikka-profile-"))
    with served_bento(out / "home") as url, httpx.Client(timeout=60) as client:
        files = {"image": ("pizza.jpg", photo, "image/jpeg")}
        for _ in range(20):  # warm-up
            client.post(f"{url}/predict", files=files).raise_for_status()
        pids = roles(url)
        duration = 3600  # stopped with SIGINT once the requests are done
        spies = {
            role: subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(RATE),
                    "--format",
                    "raw",
                    "--output",
                    str(out / f"{role}.txt"),
                    "--duration",
                    str(duration),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for role, pid in pids.items()
        }
        time.sleep(2)  # py-spy attaches
        timings = []
        for _ in range(args.requests):
            started = time.perf_counter()
            client.post(f"{url}/predict", files=files).raise_for_status()
            timings.append(time.perf_counter() - started)
        for spy in spies.values():
            spy.send_signal(subprocess.signal.SIGINT)
            spy.wait(timeout=60)
    timings.sort()
    lines = [
        "# Where an idle request's time goes",
        "",
        f"`make profile` on {time.strftime('%Y-%m-%d')}: {cpu_label()}. Generated; do not edit by hand.",
        "",
        f"{args.requests} `/predict` calls of the 750 px pizza photo, one at a time, against the Bento as"
        f" shipped: median {1000 * timings[len(timings) // 2]:.1f} ms at the client. py-spy sampled each"
        f" worker {RATE} times a second (threads the OS reports idle left out; one waiting in epoll or a"
        " send is not); each sample goes to the category of its innermost frame that names one. ms per"
        " request = samples / rate / requests, summed over a worker's threads, so a worker's total can"
        " pass the request's own time.",
        "",
    ]
    for role in ("gateway", "classifier"):
        counts: collections.Counter[str] = collections.Counter()
        for line in (out / f"{role}.txt").read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                counts[category(stack.split(";"))] += int(count)
        total = sum(counts.values()) or 1
        lines += [f"## {role}", "", "| where | share | sampled ms per request |", "|---|---|---|"]
        lines += [
            f"| {name} | {n / total:.0%} | {1000 * n / RATE / args.requests:.2f} |" for name, n in counts.most_common()
        ]
        lines += [f"| all sampled | 100% | {1000 * total / RATE / args.requests:.2f} |", ""]
    args.report.write_text("\n".join(lines))
    print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
