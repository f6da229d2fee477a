"""The service's own Prometheus metrics, beside BentoML's (served together at /metrics).

Plain prometheus_client (bentoml.metrics is deprecated); ``bentoml serve`` sets
PROMETHEUS_MULTIPROC_DIR so every worker process's samples are aggregated.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREDICTIONS = Counter(
    "tikka_predictions", "Predictions served, by top-1 label.", labelnames=["label"]
)
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
LLM_SECONDS = Histogram(
    "tikka_llm_seconds",
    "LLM call time (to the last token when streaming), by task and outcome.",
    labelnames=["task", "outcome"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0),
)
START_TIME = Gauge(
    "tikka_start_time_seconds",
    "Unix time the gateway started (for uptime).",
    # max, not min: every process that imports this module (the classifier's
    # too) reports the gauge, and the ones that never set it report 0.
    multiprocess_mode="max",
)
