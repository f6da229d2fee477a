"""The classifier's door (tikka/http/internal.py), in-process on a stand-in app."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.responses import PlainTextResponse

from tikka.http.internal import GatewayOnly


async def classify(scope, receive, send):
    await PlainTextResponse("classified")(scope, receive, send)


def call(door: GatewayOnly, path: str = "/classify", headers: dict | None = None, client=("10.0.0.9", 4000)):
    transport = httpx.ASGITransport(app=door, client=client)

    async def post():
        async with httpx.AsyncClient(transport=transport, base_url="http://classifier") as http:
            return await http.post(path, content=b"\x80\x05...", headers=headers or {})

    return asyncio.run(post())


@pytest.mark.parametrize("token", ["", "s3cret"])
def test_tcp_callers_need_the_token(token):
    door = GatewayOnly(classify, token=token)
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}, {"x-api-key": "s3cret"}):
        response = call(door, headers=headers)
        assert response.status_code == 401 and response.json()["error"] == "not_the_gateway", headers
    right = call(door, headers={"authorization": "Bearer s3cret"})
    assert (right.status_code, right.text) == ((200, "classified") if token else (401, right.text))


def test_the_private_socket_and_the_probes_pass():
    door = GatewayOnly(classify, token="")
    assert call(door, client=None).text == "classified"  # what uvicorn gives a Unix socket peer
    for probe in ("/livez", "/readyz", "/healthz", "/metrics"):
        assert call(door, probe).status_code == 200, probe
