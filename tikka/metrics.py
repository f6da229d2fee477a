"""The service's own Prometheus metrics, beside BentoML's (served together at /metrics).

Plain prometheus_client (bentoml.metrics is deprecated); ``bentoml serve`` sets
PROMETHEUS_MULTIPROC_DIR so every worker process's samples are aggregated.
"""

from __future__ import annotations

import os
import threading
import time

from prometheus_client import Counter, Gauge, Histogram

PREDICTIONS = Counter("tikka_predictions", "Predictions served, by top-1 label.", labelnames=["label"])
INFERENCE_SECONDS = Histogram(
    "tikka_inference_seconds",
    "Model time per call: one adaptive batch (classify), one image (explain), the start-up warm-up.",
    labelnames=["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
DECODE_SECONDS = Histogram(
    "tikka_image_decode_seconds",
    "Upload validation and decoding time per image, before preprocessing.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
BULK_IMAGES = Counter(
    "tikka_bulk_images",
    "Images of bulk_classify tasks, by outcome (classified or failed); they also count in tikka_predictions.",
    labelnames=["outcome"],
)
CLASSIFIER_RETRIES = Counter(
    "tikka_classifier_retries",
    "Classifier calls sent again after a connection error (a classifier pod gone under the call).",
)
LLM_SECONDS = Histogram(
    "tikka_llm_seconds",
    "LLM call time (to the last token when streaming), by task and outcome.",
    labelnames=["task", "outcome"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0),
)
LLM_TOKENS = Counter(
    "tikka_llm_tokens",
    "Tokens of finished LLM calls, by task and kind (prompt or completion), as Ollama counts them.",
    labelnames=["task", "kind"],
)
PROCESS_RESIDENT_BYTES = Gauge(
    "tikka_process_resident_memory_bytes",
    "Resident memory of each Bento worker process, by service.",
    labelnames=["service"],
    # One series per live process (the pid label is added): a dead worker's goes.
    multiprocess_mode="liveall",
)
BUILD_INFO = Gauge(
    "tikka_build_info",
    "1, labelled with what this deployment runs: the git commit it was built from and the model tag.",
    labelnames=["git_sha", "model_tag"],
    multiprocess_mode="max",
)
RUNTIME_INFO = Gauge(
    "tikka_runtime_info",
    "1, labelled with what runs the classifier: the runtime, its device, and whether it was"
    " measured fastest at start-up (TIKKA_RUNTIME=auto) or configured.",
    labelnames=["runtime", "device", "chosen"],
    multiprocess_mode="max",
)
RUNTIME_CANDIDATE_SECONDS = Gauge(
    "tikka_runtime_candidate_seconds",
    "Median seconds per image of each candidate runtime, timed at start-up (TIKKA_RUNTIME=auto).",
    labelnames=["runtime"],
    multiprocess_mode="max",
)
START_TIME = Gauge(
    "tikka_start_time_seconds",
    "Unix time the gateway started (for uptime).",
    # max, not min: every process that imports this module (the classifier's
    # too) reports the gauge, and the ones that never set it report 0.
    multiprocess_mode="max",
)


def report_resident_memory(service: str, interval_s: float = 5.0) -> None:
    """Keep this process's RSS in PROCESS_RESIDENT_BYTES from a daemon thread.

    By hand because prometheus_client's process collector does not work in the
    multiprocess mode that ``bentoml serve`` uses. Linux only (/proc); elsewhere a no-op.
    """
    statm = "/proc/self/statm"
    if not os.path.exists(statm):
        return
    gauge = PROCESS_RESIDENT_BYTES.labels(service=service)
    page_bytes = os.sysconf("SC_PAGE_SIZE")

    def update_forever() -> None:
        while True:
            with open(statm) as f:
                gauge.set(int(f.read().split()[1]) * page_bytes)
            time.sleep(interval_s)

    threading.Thread(target=update_forever, name="rss-gauge", daemon=True).start()
