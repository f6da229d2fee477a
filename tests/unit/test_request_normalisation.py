"""How the gateway reads what a client sent: one way to read a request's path
(tikka/http/routes.py), for every middleware that decides by route, so a trailing slash
slips past none of them; and the client's file name, echoed back as a plain base name."""

from __future__ import annotations

import asyncio

import pytest

from tikka.errors import TooManyRequests
from tikka.http.overload import ConcurrencyLimit
from tikka.http.routes import PROBES, ROUTES, VERSIONED_PATHS, route_of
from tikka.http.upload_guard import safe_filename


def scope(path: str) -> dict:
    return {"type": "http", "method": "GET", "path": path, "headers": []}


@pytest.mark.parametrize(("path", "route"), [("/livez/", "/livez"), ("/predict", "/predict"), ("/", "/"), ("//", "/")])
def test_route_of_drops_the_trailing_slash(path, route):
    assert route_of(scope(path)) == route


def test_a_probe_with_a_trailing_slash_is_never_shed():
    """/livez/ was shed with a 429 under load while /livez was not."""

    async def run() -> list[str]:
        release = asyncio.Event()
        answered = []

        async def app(scope, receive, send):
            if scope["path"] == "/predict":
                await release.wait()
            answered.append(scope["path"])

        limit = ConcurrencyLimit(app, limit=1, exempt=PROBES)
        busy = asyncio.create_task(limit(scope("/predict"), None, None))
        await asyncio.sleep(0)  # the first request is in flight: the limit is reached
        for probe in ("/livez", "/livez/", "/readyz/", "/metrics/"):
            await limit(scope(probe), None, None)
        with pytest.raises(TooManyRequests):
            await limit(scope("/predict/"), None, None)
        release.set()
        await busy
        return answered

    assert asyncio.run(run()) == ["/livez", "/livez/", "/readyz/", "/metrics/", "/predict"]


def test_every_versioned_route_is_documented_and_every_documented_route_versioned():
    assert {path for _, path in ROUTES} == set(VERSIONED_PATHS)


@pytest.mark.parametrize(
    ("raw", "echoed"),
    [
        ("pizza.jpg", "pizza.jpg"),
        ("../../../etc/passwd", "passwd"),
        ("C:\\\\Users\\\\me\\\\pizza.jpg", "pizza.jpg"),
        ("piz\x00za.jpg", "pizza.jpg"),
        ("evil\u202egpj.exe", "evilgpj.exe"),
        ("<img src=x onerror=alert(1)>.jpg", "img src=x onerror=alert(1).jpg"),
        ("x" * 300 + ".jpg", "x" * 255),
        ("", ""),
        (None, ""),
    ],
)
def test_the_echoed_file_name_is_a_plain_base_name(raw, echoed):
    assert safe_filename(raw) == echoed


def test_the_middlewares_route_lists_come_from_the_route_table():
    """One declaration per route: which routes take uploads, JSON and keys is read from ROUTES."""
    from tikka.http.routes import ARCHIVE_ROUTES, JSON_ROUTES, KEYED_ROUTES, UPLOAD_ROUTES
    from tikka.http.schemas import DishRequest, GenerateRequest

    assert set(UPLOAD_ROUTES) == {"/predict", "/predict/explain"}
    assert set(ARCHIVE_ROUTES) == {"/bulk_classify", "/bulk_classify/submit"}
    assert JSON_ROUTES == {"/llm/generate": GenerateRequest, "/llm/dish": DishRequest}
    task_routes = {f"/bulk_classify/{name}" for name in ("progress", "status", "get", "retry", "cancel")}
    assert set(KEYED_ROUTES) == {*UPLOAD_ROUTES, *ARCHIVE_ROUTES, *JSON_ROUTES, *task_routes}, "health stays open"
