"""A fix for BentoML 1.4.40's adaptive batching: a lone request waited for a batch that never came.

BentoML's dispatcher holds a request back while ``n * (wait_so_far + a) <=
0.95 * optimizer.wait``, where ``optimizer.wait`` is the mean time recent
batches spent between their first enqueue and their dispatch. That time
includes queueing behind the batch in flight, so after a burst it is large
(hundreds of ms), every later request is held back that long, and each held
request records the same long wait again: measured here, a single request took
60-80 ms before a burst of 80 and 330-460 ms after it, for minutes.

Waiting only pays where a bigger batch is much cheaper per image, and under
load batches form anyway while the batch in flight runs (one at a time). On
a CPU the exported graph runs as fast per image at batch 1 as at batch 8
(benchmarks/REPORT.md), so the voluntary wait is capped by a setting,
``TIKKA_MAX_BATCH_WAIT_MS`` (2 ms by default). A first cap at the fitted
per-batch fixed cost was not enough: under CPU contention the fit put that
cost at tens of ms. ``tests/test_served.py::test_latency_returns_to_idle_after_a_burst``
pins this (it fails without the cap: 70 ms after the load against 18 ms before).
"""

from __future__ import annotations

from bentoml._internal.marshal.dispatcher import Optimizer

_refresh = Optimizer.trigger_refresh


def cap_batching_wait(max_wait_ms: float) -> None:
    """Install the cap (idempotent); the services module calls it at import, in every worker."""

    def trigger_refresh_with_capped_wait(self: Optimizer) -> None:
        _refresh(self)
        self.wait = min(self.wait, max_wait_ms / 1000)

    Optimizer.trigger_refresh = trigger_refresh_with_capped_wait
