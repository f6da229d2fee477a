"""Wrong API keys are limited per address (issue 17: 300 wrong keys in 0.6 s all got 401,
none a 429, because the key check runs before the rate limit)."""

from __future__ import annotations

import asyncio

import pytest

from tikka.errors import TooManyRequests, Unauthorized
from tikka.http.auth import APIKeyAuth


def request(key: str | None, address: str = "203.0.113.7") -> dict:
    headers = [(b"x-api-key", key.encode())] if key else []
    return {"type": "http", "method": "POST", "path": "/predict", "headers": headers, "client": (address, 5555)}


def answer(auth: APIKeyAuth, scope: dict) -> int:
    async def call() -> int:
        try:
            await auth(scope, None, None)
        except Unauthorized:
            return 401
        except TooManyRequests as exc:
            assert int(exc.headers["Retry-After"]) >= 1
            return 429
        return 200

    return asyncio.run(call())


@pytest.fixture
def auth() -> APIKeyAuth:
    async def app(scope, receive, send):
        return None

    return APIKeyAuth(
        app,
        api_paths=("/predict",),
        api_keys=("right",),
        metrics_paths=(),
        metrics_keys=(),
        failure_burst=5,
        failures_per_min=1,
    )


def test_a_guesser_gets_429_after_the_burst_of_wrong_keys(auth):
    assert [answer(auth, request(f"guess-{i}")) for i in range(8)] == [401] * 5 + [429] * 3


def test_the_right_key_and_other_addresses_are_not_locked_out(auth):
    for i in range(8):
        answer(auth, request(f"guess-{i}"))
    assert answer(auth, request("right")) == 200  # the same address, the right key
    assert answer(auth, request("guess", address="198.51.100.1")) == 401  # another address
    assert [answer(auth, request(None)) for _ in range(8)] == [401] * 8  # no key: not a guess
