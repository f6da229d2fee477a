"""A fix for BentoML 1.4.40's adaptive batching: a lone request waited for a batch that never came.

BentoML's dispatcher holds a request back while ``n * (wait_so_far + a) <=
0.95 * optimizer.wait``, where ``optimizer.wait`` is the mean time recent
batches spent between their first enqueue and their dispatch. That time
includes queueing behind the batch in flight, so after a burst it is large
(hundreds of ms), every later request is held back that long, and each held
request records the same long wait again: measured here, a single request took
60-80 ms before a burst of 80 and 330-460 ms after it, for minutes.

Waiting only pays while it saves more than it costs: longer than one batch's
fixed cost (``o_b`` of the fitted ``duration = o_a * n + o_b``) it never does,
and under load batches still form on their own while the batch in flight runs
(one at a time). So the voluntary wait is capped at ``o_b``.
``tests/test_served.py::test_latency_returns_to_idle_after_a_burst`` pins this.
"""

from __future__ import annotations

from bentoml._internal.marshal.dispatcher import Optimizer

_refresh = Optimizer.trigger_refresh


def _trigger_refresh_with_capped_wait(self: Optimizer) -> None:
    _refresh(self)
    self.wait = min(self.wait, self.o_b)


def cap_batching_wait() -> None:
    """Install the cap (idempotent); the services module calls it at import, in every worker."""
    Optimizer.trigger_refresh = _trigger_refresh_with_capped_wait
