"""Load shedding at the gateway: beyond ``max_concurrency`` requests in flight, a 429 at once;
a memory budget for image decoding (``DecodeMemory``), and turns for costly decodes
(``CostlyDecodes``).

Written as a small ASGI middleware rather than BentoML's ``traffic.max_concurrency``
because BentoML answers its 429 outside every user middleware: the body was
``{"error": "Too many requests"}`` with no ``detail``, no ``Retry-After`` and no
CORS header, so a browser could not even read it. Here the answer has the
service's error shape and passes through CORS. Probes and metrics are never
shed: an orchestrator must see a busy service as alive and ready.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from tikka.errors import ImageTooLarge, TooManyRequests
from tikka.http.routes import route_of

RETRY_AFTER_S = 1


class ConcurrencyLimit:
    def __init__(self, app: ASGIApp, limit: int, exempt: Iterable[str]):
        self.app = app
        self.limit = limit
        self.exempt = frozenset(exempt)
        self.in_flight = 0  # one event loop per worker process: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or route_of(scope) in self.exempt:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            detail = f"the service has {self.limit} requests in flight; retry in {RETRY_AFTER_S} s"
            raise TooManyRequests(detail, {"Retry-After": str(RETRY_AFTER_S)})
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class DecodeMemory:
    """The bytes that image decodes may hold at once, across the requests of this process.

    A decode takes its estimated peak (``tikka.model.imaging.decoding_cost``, from the
    header) before it starts and gives it back when it ends. One that would take more
    than the whole budget is refused (413); one that must wait for others waits at most
    ``wait_s``, then gets a 429. Not first come, first served: whatever fits goes, so
    photos keep flowing beside a wave of large images, which wait for each other.
    Hand-written because anyio's limiters count tokens, not weights.
    """

    def __init__(self, capacity: int, wait_s: float):
        self.capacity, self.wait_s = capacity, wait_s
        self.held = 0  # one event loop per worker process: no lock needed
        self.released = anyio.Event()

    @contextlib.asynccontextmanager
    async def hold(self, nbytes: int):
        mb = 1024 * 1024
        if nbytes > self.capacity:
            raise ImageTooLarge(
                f"decoding this image would take about {nbytes // mb} MB; the limit is {self.capacity // mb} MB"
            )
        try:
            with anyio.fail_after(self.wait_s):
                while self.held + nbytes > self.capacity:
                    await self.released.wait()
        except TimeoutError:
            detail = f"the service is decoding {self.held // mb} MB of images; retry in {RETRY_AFTER_S} s"
            raise TooManyRequests(detail, {"Retry-After": str(RETRY_AFTER_S)}) from None
        self.held += nbytes
        try:
            yield
        finally:
            self.held -= nbytes
            self.released.set()
            self.released = anyio.Event()


class CostlyDecodes:
    """Decodes that cost more than ``threshold`` pixel passes (``DecodingCost.pixel_passes``)
    take turns, ``slots`` at once, waiting at most ``wait_s`` before a 429; cheaper ones go
    straight on. A wave of progressive-JPEG bombs, each just under the CPU budget, then
    holds ``slots`` cores, not every decode thread: photos keep the other cores."""

    def __init__(self, slots: int, threshold: int, wait_s: float):
        self.turns = anyio.Semaphore(slots)
        self.threshold, self.wait_s = threshold, wait_s

    @contextlib.asynccontextmanager
    async def turn(self, pixel_passes: int):
        if pixel_passes <= self.threshold:
            yield
            return
        try:
            with anyio.fail_after(self.wait_s):
                await self.turns.acquire()
        except TimeoutError:
            detail = f"the service is busy with costly images; retry in {RETRY_AFTER_S} s"
            raise TooManyRequests(detail, {"Retry-After": str(RETRY_AFTER_S)}) from None
        try:
            yield
        finally:
            self.turns.release()


class LivePriority:
    """Live requests first: bulk images run in the gaps of /predict traffic.

    A bulk image waits until no live request has been in flight for ``quiet_s``, but never
    longer than ``max_wait_s``, so a bulk task still moves on under steady live load (at
    one image per ``max_wait_s`` at worst). Closed-loop clients send their next photo within
    a millisecond or two of the last answer; a quiet period of tens of milliseconds keeps a
    bulk image from slipping in between. Hand-written: anyio's limiters have no priorities.
    """

    def __init__(self, quiet_s: float, max_wait_s: float):
        self.quiet_s, self.max_wait_s = quiet_s, max_wait_s
        self.in_flight = 0  # one event loop per worker process: no lock needed
        self.last_seen = 0.0

    @contextlib.contextmanager
    def live(self):
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self.last_seen = anyio.current_time()

    async def gap(self) -> None:
        """Return once the live path is quiet, or ``max_wait_s`` from now."""
        deadline = anyio.current_time() + self.max_wait_s
        while (now := anyio.current_time()) < deadline:
            quiet_for = now - self.last_seen
            if not self.in_flight and quiet_for >= self.quiet_s:
                return
            await anyio.sleep(min(max(self.quiet_s - quiet_for, 0.002), deadline - now))
