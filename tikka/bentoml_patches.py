"""Every workaround for BentoML internals (and the Starlette under it), in one place, for
the version they were written for.

Importing this module checks that the installed BentoML is that version: an upgrade fails
loudly here, and each workaround below is then checked against the new version by the
test it names before ``WRITTEN_FOR`` moves.

1. ``cap_batching_wait``: adaptive batching held a lone request back for a batch that
   never came. BentoML's dispatcher holds a request while ``n * (wait_so_far + a) <=
   0.95 * optimizer.wait``, where ``optimizer.wait`` is the mean time recent batches spent
   between their first enqueue and their dispatch. That time includes queueing behind
   the batch in flight, so after a burst it is large (hundreds of ms), every later
   request is held back that long, and each held request records the same long wait
   again: measured here, a single request took 60-80 ms before a burst of 80 and
   330-460 ms after it, for minutes. On a CPU the exported graph runs as fast per image
   at batch 1 as at batch 8 (benchmarks/REPORT.md), so the voluntary wait is capped by
   ``TIKKA_MAX_BATCH_WAIT_MS`` (2 ms by default). Test:
   ``tests/served/test_served.py::test_latency_returns_to_idle_after_a_burst`` (70 ms after
   the load against 18 ms before, without the cap).
2. ``bound_endpoint_labels``: BentoML labels its request metrics with the raw path, so
   each unknown URL added series to /metrics for good. Test:
   ``tests/served/test_served.py::test_unknown_paths_share_one_metrics_label``.
3. ``keep_uploads_in_memory``: Starlette, under BentoML's multipart parsing (and the
   upload guard's), spools each uploaded file to a temporary file past 1 MB, and takes
   the size only as a class attribute. Test: ``tests/reliability/test_privacy.py``.
4. ``authenticate_dependency``: BentoML's client to a dependency served apart takes no
   token or headers from the caller (only ``BENTO_CLOUD_API_KEY``, for BentoCloud), and
   pickles its payloads, which the classifier must therefore take from the gateway only
   (tikka/http/internal.py). The client's default headers get the gateway's token. Test:
   ``tests/served/test_split.py``.
5. ``answer_outer_errors``: two answers are written outside every user middleware, so
   no middleware can put them in the error shape: BentoML's request timeout (a 504
   ``{"error": "Not able to process ..."}``, no ``detail``) and uvicorn's answer to
   malformed HTTP (a text/plain 400). Both now come from the function given. Test:
   ``tests/reliability/test_hostile.py::test_answers_written_outside_the_middlewares_are_in_the_error_shape``.

6. ``retire_dependency_sessions_gently``: BentoML's client to a dependency replaces its
   connection pool every ``runner_connection.max_age`` seconds (or ``max_requests``
   calls), and closed the old pool at once, under the calls still in flight on it: at 16
   clients ~15% of /predict calls failed with "Server disconnected". Never renewing the
   pool (the earlier workaround) pinned each gateway to the classifier pods it first
   reached, so a pod the autoscaler added got none of its traffic. The old pool is now
   closed only once the longest call could have finished. Test:
   ``tests/unit/test_bentoml_patches.py::test_a_replaced_session_is_closed_after_its_calls``.

7. ``connect_per_call_over_tcp``: even renewed, a pool sends most calls down the connection
   it used last, so behind kube-proxy, which balances connections, the classifier pod that
   holds it gets most of the calls: a replica added under load served 12% of the calls 60 s
   after its start (haproxy standing in for kube-proxy). A classifier reached over TCP (its
   own pods) now gets a new connection per call, which kube-proxy balances, and a pod
   taken out of the endpoints gets no call after it. Over BentoML's Unix socket (one pod)
   connections are kept. Test: ``tests/served/test_scale_out.py``.

None is reported upstream yet; 1, 2, 4, 5, 6 and 7 patch BentoML's private modules
(``bentoml._internal``), which is why the version is pinned and checked.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING

import bentoml
import uvicorn
from bentoml._internal.marshal.dispatcher import Optimizer

if TYPE_CHECKING:
    from starlette.responses import Response

WRITTEN_FOR = "1.4.40"
UVICORN_WRITTEN_FOR = "0.54.0"  # workaround 5
if bentoml.__version__ != WRITTEN_FOR or uvicorn.__version__ != UVICORN_WRITTEN_FOR:
    raise RuntimeError(
        f"tikka/bentoml_patches.py patches BentoML {WRITTEN_FOR} and uvicorn {UVICORN_WRITTEN_FOR}"
        f" internals, and they are {bentoml.__version__} and {uvicorn.__version__}: check each workaround against it (their tests are named in"
        " the module) before changing WRITTEN_FOR"
    )

_refresh = Optimizer.trigger_refresh


def cap_batching_wait(max_wait_ms: float) -> None:
    """Install the cap (idempotent); the services module calls it at import, in every worker."""

    def trigger_refresh_with_capped_wait(self: Optimizer) -> None:
        _refresh(self)
        self.wait = min(self.wait, max_wait_ms / 1000)

    Optimizer.trigger_refresh = trigger_refresh_with_capped_wait


UNMATCHED_PATH = "/<unmatched>"


def bound_endpoint_labels(known_paths: frozenset[str], known_prefixes: tuple[str, ...] = ()) -> None:
    """Label requests to unknown paths ``/<unmatched>``, and to paths under a known prefix
    with the prefix, in BentoML's request metrics.

    BentoML 1.4.40 labels every request with its raw path, so each unknown URL added
    series to /metrics for good (about 4.5 KB per path, 1.4 MB for a 60 KB URL, NUL
    bytes from ``/predict%00``). Its metrics middleware runs before any of the
    service's own, so the label is fixed by wrapping that middleware: the request
    is counted under one label and still routed (and answered 404) by its own path.
    Called in the gateway's process only; idempotent.
    """
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware

    if getattr(RunnerTrafficMetricsMiddleware.__call__, "bounded", False):
        return
    counted = RunnerTrafficMetricsMiddleware.__call__

    def label_of(path: str) -> str:
        """The path itself if known; a known prefix for paths under it (the static assets:
        any suffix added series too); else UNMATCHED_PATH."""
        if path in known_paths:
            return path
        return next((prefix for prefix in known_prefixes if path.startswith(prefix)), UNMATCHED_PATH)

    async def call_with_bounded_labels(self, scope, receive, send):
        path = scope.get("path", "")
        label = label_of(path) if scope["type"] == "http" else path
        if label == path:
            return await counted(self, scope, receive, send)
        if not self._is_setup:  # set up once, on the real middleware, never on the copy below
            self._setup()
        app = self.app

        async def routed_by_its_own_path(inner_scope, inner_receive, inner_send):
            await app({**inner_scope, "path": path, "raw_path": scope.get("raw_path")}, inner_receive, inner_send)

        relabelled = copy.copy(self)
        relabelled.app = routed_by_its_own_path
        await counted(relabelled, {**scope, "path": label}, receive, send)

    call_with_bounded_labels.bounded = True
    RunnerTrafficMetricsMiddleware.__call__ = call_with_bounded_labels


def keep_uploads_in_memory(max_bytes: int) -> None:
    """Raise Starlette's spool size to the body limit, so that no accepted upload ever
    rolls over to a temporary file (the whole process: its parser has no other knob)."""
    from starlette.formparsers import MultiPartParser

    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, max_bytes)


def authenticate_dependency(dependency: object, authorization: str) -> None:
    """Send ``Authorization: <authorization>`` on every call of a dependency served apart.

    ``dependency`` is what ``bentoml.depends`` resolved to: a RemoteProxy across
    processes (its client session copies ``default_headers``, the same dict, when it is
    first made), or the service object itself in-process, which needs nothing.
    """
    from _bentoml_impl.client.proxy2 import RemoteProxy

    if isinstance(dependency, RemoteProxy):
        dependency.to_async.default_headers["Authorization"] = authorization


def answer_outer_errors(error_response: Callable[[int, str], Response]) -> None:
    """BentoML's timeout and uvicorn's malformed-request answer, rendered by ``error_response``."""
    import h11
    from bentoml._internal.server.http import traffic
    from uvicorn.protocols.http.h11_impl import H11Protocol

    def bentoml_response(content: dict, status_code: int) -> Response:
        # BentoML's traffic module builds only its timeout (504) and max-concurrency (429,
        # unused here) answers, as JSONResponse({"error": message}, status_code).
        return error_response(status_code, str(content.get("error", "")))

    traffic.JSONResponse = bentoml_response

    def send_400_response(self: H11Protocol, msg: str) -> None:
        response = error_response(400, msg)
        event = h11.Response(
            status_code=400,
            reason=b"Bad Request",
            headers=[
                (b"content-type", b"application/json"),
                (b"content-length", str(len(response.body)).encode()),
                (b"connection", b"close"),
            ],
        )
        for part in (event, h11.Data(data=response.body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(part))
        self.transport.close()

    H11Protocol.send_400_response = send_400_response


def retire_dependency_sessions_gently() -> None:
    """Close a replaced dependency session after the client's timeout, not at once."""
    import asyncio
    import time

    from _bentoml_impl.client.proxy2 import SessionManager

    if getattr(SessionManager.get_session, "gentle", False):
        return

    async def get_session(self: SessionManager):
        if self._session is None or self._should_refresh():
            if self._session is not None:
                retired = self._session
                closing = getattr(self, "_closing", set())
                self._closing = closing

                def close() -> None:
                    task = asyncio.ensure_future(retired.close())
                    closing.add(task)  # held until done: the loop keeps only weak references
                    task.add_done_callback(closing.discard)

                asyncio.get_running_loop().call_later(self._timeout.total or 60, close)
            self._session = self._make_client()
            self._created_at = time.monotonic()
            self._request_count = 0
        self._request_count += 1
        return self._session

    get_session.gentle = True
    SessionManager.get_session = get_session


def connect_per_call_over_tcp() -> None:
    """A new TCP connection for each call to a dependency at an http(s) or tcp address."""
    import aiohttp
    from _bentoml_impl.client.proxy2 import SessionManager

    if getattr(SessionManager._make_client, "per_call", False):
        return
    make_client = SessionManager._make_client

    def _make_client(self: SessionManager) -> aiohttp.ClientSession:
        if self._app is not None or self._parsed_url.scheme == "file":  # in-process, Unix socket
            return make_client(self)
        url = self._parsed_url
        return aiohttp.ClientSession(
            base_url=f"http://{url.netloc}" if url.scheme == "tcp" else url.geturl(),
            headers=self._headers,
            timeout=self._timeout,
            # A connection per call cost 0.2-0.4 ms more than keep-alive on loopback (aiohttp
            # against uvicorn, 1000 calls), against 5-250 ms of inference per call.
            connector=aiohttp.TCPConnector(force_close=True),
        )

    _make_client.per_call = True
    SessionManager._make_client = _make_client
