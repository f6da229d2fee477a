"""`make test-images`: the Bento image under a CPU quota (`podman run --cpus`), as a pod with
a CPU limit runs it on a larger node. Its threads must follow the quota, not the host's
cores (tikka/settings.py, available_cpus): the log names the inference threads. Then the
same load, 4 clients at once, against the quota's thread count and against the old one
(every core of the host, twice that for decoding), for the report: p50 and p95 side by
side, same run. Only the thread count is asserted; timings are reported, not judged.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import subprocess
import time
from pathlib import Path

import httpx

PHOTO = Path(__file__).resolve().parents[2] / "tests" / "data" / "pizza.jpg"


def serve(image: str, cpus: str, port: int, env: dict[str, str]) -> str:
    name = f"tikka-cpu-quota-{port}"
    subprocess.run(["podman", "rm", "-f", name], capture_output=True)
    flags = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    subprocess.run(
        [
            "podman",
            "run",
            "-d",
            "--init",
            "--name",
            name,
            f"--cpus={cpus}",
            "-e",
            "BENTOML_PORT=8000",
            *flags,
            "-p",
            f"127.0.0.1:{port}:8000",
            image,
        ],
        check=True,
        capture_output=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return name
        except httpx.HTTPError:
            pass
        time.sleep(1)
    logs = subprocess.run(["podman", "logs", "--tail", "40", name], capture_output=True, text=True)
    raise SystemExit(f"{name} not ready in 180 s:\n{logs.stdout}{logs.stderr}")


def load(port: int, requests: int = 80, clients: int = 4) -> list[float]:
    photo = PHOTO.read_bytes()

    def one(_: int) -> float:
        started = time.perf_counter()
        response = httpx.post(
            f"http://127.0.0.1:{port}/predict", files={"image": ("p.jpg", photo, "image/jpeg")}, timeout=60
        )
        response.raise_for_status()
        return time.perf_counter() - started

    for _ in range(8):  # warm-up
        one(0)
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(requests)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("image")
    parser.add_argument("--cpus", default="1")
    parser.add_argument("--port", type=int, default=8020)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    expected = max(1, int(float(args.cpus) + 0.999))
    variants = {
        f"quota ({expected} inference, {2 * expected} decode threads)": {},
        f"the old count ({cores} inference, {2 * cores} decode threads)": {
            "TIKKA_INFERENCE_THREADS": str(cores),
            "TIKKA_DECODE_THREADS": str(2 * cores),
        },
    }
    rows = []
    for label, env in variants.items():
        name = serve(args.image, args.cpus, args.port, env)
        try:
            log = subprocess.run(["podman", "logs", name], capture_output=True, text=True)
            threads = expected if not env else cores
            line = f"{threads} inference threads"
            assert line in log.stdout + log.stderr, (
                f"{label}: no '{line}' in the log:\n{log.stdout[-3000:]}{log.stderr[-3000:]}"
            )
            times = sorted(load(args.port))
        finally:
            subprocess.run(["podman", "rm", "-f", name], capture_output=True)
        p95 = times[int(0.95 * (len(times) - 1))]
        rows.append(f"| {label} | {1000 * statistics.median(times):.0f} | {1000 * p95:.0f} |")
    print(f"`podman run --cpus={args.cpus}` on a {cores}-core host, 80 requests from 4 clients:\n")
    print("| threads | p50 ms | p95 ms |\n|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
