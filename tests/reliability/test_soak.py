"""Soak: mixed predict, explain and LLM traffic against a really served Bento, for
``TIKKA_SOAK_S`` seconds (60 in the test suite; ``make soak`` runs 300).

It samples each worker's RSS every few seconds and reports its trend, the errors (none
is expected) and the latency drift (the last third of the run against the first). The
pass criteria are ratios and growth within the run, never absolute times.

The first ``TIKKA_SOAK_WARMUP_S`` (60 s) of traffic are a warm-up, outside the trend:
measured over 150 s, each worker's RSS rose for the first ~60 s (the allocator and
caches filling: the gateway 112 -> 295 MB, the classifier 223 -> 300 MB) and then
stayed flat to the end.
"""

from __future__ import annotations

import os
import statistics
import threading
import time

import httpx
import pytest

from tests import helpers, records

pytestmark = [pytest.mark.slow, pytest.mark.served, pytest.mark.soak]

SOAK_S = float(os.environ.get("TIKKA_SOAK_S", "60"))
WARMUP_S = float(os.environ.get("TIKKA_SOAK_WARMUP_S", "60"))
SAMPLE_EVERY_S = 3.0
# Growth from the first third of the run to its end that counts as a leak.
RSS_GROWTH_LIMIT = 48 * 1024 * 1024
LATENCY_DRIFT_LIMIT = 2.0


@pytest.fixture(scope="module")
def soak_bento(default_model, sidecar, tmp_path_factory):
    env = {"OLLAMA_HOST": sidecar.url, "TIKKA_LLM_QUEUE_WAIT_S": "30", "MALLOC_ARENA_MAX": "2"}  # as in the image
    with helpers.served_bento(tmp_path_factory.mktemp("soak"), env) as url:
        yield url


def test_mixed_traffic_keeps_memory_flat_errors_at_zero_and_latency_steady(soak_bento, photo):
    url = soak_bento
    photos = [photo(name) for name in ("pizza.jpg", "guacamole.jpg", "hamburger.jpg")]
    started = time.monotonic() + WARMUP_S  # times below count from the end of the warm-up
    stop = started + SOAK_S
    latencies: dict[str, list[tuple[float, float]]] = {"predict": [], "explain": [], "llm": []}
    errors: list[str] = []
    rss: list[tuple[float, dict[str, int]]] = []

    def loop(kind: str, call) -> None:
        with httpx.Client(base_url=url, timeout=120, limits=helpers.CLIENT_LIMITS) as client:
            i = 0
            while time.monotonic() < stop:
                began = time.monotonic()
                response = call(client, i)
                i += 1
                if response.status_code == 200:
                    if began >= started:
                        latencies[kind].append((began - started, time.monotonic() - began))
                else:
                    errors.append(f"{kind}: {response.status_code} {response.text[:120]}")

    def predict(client: httpx.Client, i: int) -> httpx.Response:
        return client.post("/predict", files={"image": ("p.jpg", photos[i % 3], "image/jpeg")})

    def explain(client: httpx.Client, i: int) -> httpx.Response:
        return client.post("/predict/explain", files={"image": ("p.jpg", photos[i % 3], "image/jpeg")})

    def llm(client: httpx.Client, i: int) -> httpx.Response:
        task = ("recipe", "nutrition", "origin")[i % 3]
        return client.post(
            "/llm/dish",
            json={
                "dish": ("pizza", "guacamole", "hamburger")[i % 3],
                "task": task,
                "max_tokens": 16,
                "stream": i % 2 == 1,
            },
        )

    threads = [
        threading.Thread(target=loop, args=args)
        for args in [("predict", predict)] * 3 + [("explain", explain), ("llm", llm)]
    ]
    for thread in threads:
        thread.start()
    warm = helpers.worker_rss(url)
    while time.monotonic() < stop:
        if time.monotonic() >= started:
            rss.append((time.monotonic() - started, helpers.worker_rss(url)))
        time.sleep(SAMPLE_EVERY_S)
    for thread in threads:
        thread.join()
    rss.append((time.monotonic() - started, helpers.worker_rss(url)))

    assert errors == [], errors[:5]
    assert all(latencies.values()), {k: len(v) for k, v in latencies.items()}
    workers = sorted(warm)
    assert sorted(rss[-1][1]) == workers, "a worker was replaced (crashed) during the soak"
    mb = 1024 * 1024
    trend = {}
    for worker in workers:
        early = statistics.median(sample[worker] for at, sample in rss if at <= SOAK_S / 3)
        trend[worker] = {
            "before the warm-up MB": round(warm[worker] / mb),
            "first third MB": round(early / mb),
            "end MB": round(rss[-1][1][worker] / mb),
            "growth MB": round((rss[-1][1][worker] - early) / mb, 1),
        }
        assert rss[-1][1][worker] - early < RSS_GROWTH_LIMIT, f"{worker} grew: {trend[worker]}"
    drift = {}
    for kind, timings in latencies.items():
        first = [t for at, t in timings if at < SOAK_S / 3]
        last = [t for at, t in timings if at >= 2 * SOAK_S / 3]
        if first and last:
            drift[kind] = statistics.median(last) / statistics.median(first)
    assert drift["predict"] < LATENCY_DRIFT_LIMIT, drift
    records.record(
        "soak",
        [
            {
                "traffic": kind,
                "requests": len(timings),
                "errors": sum(e.startswith(kind) for e in errors),
                "p50 ms": round(statistics.median(t for _, t in timings) * 1000, 1),
                "latency drift (last third / first third p50)": round(drift.get(kind, float("nan")), 2),
            }
            for kind, timings in latencies.items()
        ],
        duration_s=SOAK_S,
        warm_up_s=WARMUP_S,
        clients="3 predict, 1 explain, 1 LLM (/llm/dish, 16 tokens, every other one streamed)",
        rss_samples=len(rss),
        worker_rss=trend,
        unexpected_errors=len(errors),
    )
