"""The upload guard reads bodies whole before admission; what it holds is bounded in bytes."""

from __future__ import annotations

import asyncio

import httpx
from starlette.responses import PlainTextResponse

from tikka.http.errors import ErrorBoundary
from tikka.http.upload_guard import UploadGuard


async def accepted(scope, receive, send):
    await PlainTextResponse("accepted")(scope, receive, send)


def form(size: int) -> dict:
    return {"files": {"image": ("p.jpg", b"\xff" * size, "image/jpeg")}}


def test_bodies_past_the_buffered_budget_get_a_429_and_the_budget_is_given_back():
    guard = UploadGuard(accepted, paths=["/predict"], field="image", max_bytes=1_000_000, max_buffered_bytes=50_000)
    app = ErrorBoundary(guard, max_drain_bytes=4_000_000)

    async def run():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            small = await client.post("/predict", **form(10_000))
            over = await client.post("/predict", **form(100_000))
            refused = await client.post("/predict", files={"other": ("x.bin", b"1", "image/jpeg")})
            again = await client.post("/predict", **form(10_000))
            return small, over, refused, again

    small, over, refused, again = asyncio.run(run())
    assert (small.status_code, small.text) == (200, "accepted")
    assert over.status_code == 429 and over.json()["error"] == "too_many_requests"
    assert over.headers["retry-after"] == "1"
    assert refused.status_code == 422  # an error after the body was read: its bytes are given back too
    assert again.status_code == 200
    assert guard.buffered_bytes == 0
