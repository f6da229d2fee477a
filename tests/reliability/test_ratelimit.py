"""Per-client rate limiting: the token buckets alone, then two really served Bentos.

- Behind a trusted proxy (uvicorn trusts 127.0.0.1 by default, which is where the
  test connects from) each X-Forwarded-For address has its own bucket.
- With FORWARDED_ALLOW_IPS naming another host, X-Forwarded-For is ignored: a client
  cannot get fresh buckets by inventing addresses. With API keys the key is the client.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests import helpers, records
from tikka.http.buckets import TokenBuckets

ORIGIN = "http://localhost:8501"
RATE, BURST = 2, 3


def test_a_bucket_allows_its_burst_then_its_rate_and_says_when():
    now = [0.0]
    buckets = TokenBuckets(rate_per_s=2, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0, "another client has its own bucket"
    now[0] += 0.5
    assert buckets.take("a") == 0 and buckets.take("a") == pytest.approx(0.5)
    now[0] += 60
    assert [buckets.take("a") for _ in range(4)][:3] == [0, 0, 0], "a bucket refills only up to the burst"


def test_buckets_are_bounded_in_number():
    buckets = TokenBuckets(rate_per_s=1, burst=1, max_clients=100)
    for client in range(10_000):
        buckets.take(f"spoofed-{client}")
    assert len(buckets.buckets) == 100


def tiny_jpeg() -> bytes:
    return helpers.encode(helpers.photo_image().resize((64, 48)), "JPEG")


def burst(url: str, count: int, **headers) -> list[httpx.Response]:
    with httpx.Client(base_url=url, timeout=60) as client:
        return [
            client.post("/predict", files={"image": ("p.jpg", tiny_jpeg(), "image/jpeg")}, headers=headers)
            for _ in range(count)
        ]


@pytest.mark.slow
@pytest.mark.served
def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket(default_model, tmp_path):
    env = {"TIKKA_RATE_LIMIT_PER_S": str(RATE), "TIKKA_RATE_LIMIT_BURST": str(BURST)}
    with helpers.served_bento(tmp_path, env) as url:
        first = burst(url, BURST + 2, **{"X-Forwarded-For": "203.0.113.7", "Origin": ORIGIN})
        other = burst(url, 1, **{"X-Forwarded-For": "203.0.113.8"})
        probes = [httpx.get(f"{url}{path}").status_code for path in ("/livez", "/readyz", "/health") * 5]
        time.sleep(1 / RATE + 0.1)
        again = burst(url, 1, **{"X-Forwarded-For": "203.0.113.7"})
    statuses = [r.status_code for r in first]
    assert statuses[:BURST] == [200] * BURST and statuses[BURST:] == [429, 429]
    refused = first[-1]
    assert refused.json()["error"] == "too_many_requests" and "rate limit" in refused.json()["detail"]
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    assert other[0].status_code == 200, "another forwarded client is not limited by the first"
    assert set(probes) == {200}, "probes are never limited"
    assert again[0].status_code == 200, "the bucket refills at the rate"
    records.record(
        "access",
        [
            {
                "case": f"rate limit {RATE}/s, burst {BURST}: one forwarded client sends {BURST + 2} at once",
                "tried": BURST + 2,
                "expected": f"{BURST} x 200, then 429 + Retry-After",
                "observed": statuses,
            },
            {
                "case": "a second forwarded client, at once",
                "tried": 1,
                "expected": "200",
                "observed": other[0].status_code,
            },
            {
                "case": "probes during the limit",
                "tried": len(probes),
                "expected": "all 200",
                "observed": sorted(set(probes)),
            },
        ],
    )


@pytest.mark.slow
@pytest.mark.served
def test_an_untrusted_peer_cannot_dodge_the_limit_with_forwarded_for_but_keys_are_clients(default_model, tmp_path):
    env = {
        "TIKKA_RATE_LIMIT_PER_S": str(RATE),
        "TIKKA_RATE_LIMIT_BURST": str(BURST),
        "FORWARDED_ALLOW_IPS": "198.51.100.1",
        "TIKKA_API_KEYS": json.dumps(["key-a", "key-b"]),
    }
    with helpers.served_bento(tmp_path, env) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            spoofed = [
                client.post(
                    "/predict",
                    files={"image": ("p.jpg", tiny_jpeg(), "image/jpeg")},
                    headers={"X-Forwarded-For": f"203.0.113.{i}", "X-API-Key": "key-a"},
                ).status_code
                for i in range(BURST + 2)
            ]
        other_key = burst(url, 1, **{"X-API-Key": "key-b"})
    assert spoofed[:BURST] == [200] * BURST and spoofed[BURST:] == [429, 429]
    assert other_key[0].status_code == 200, "each API key is its own client"
    records.record(
        "access",
        [
            {
                "case": "an untrusted peer invents a new X-Forwarded-For per request",
                "tried": len(spoofed),
                "expected": f"{BURST} x 200, then 429",
                "observed": spoofed,
            },
            {
                "case": "a second API key from the same address",
                "tried": 1,
                "expected": "200",
                "observed": other_key[0].status_code,
            },
        ],
    )
