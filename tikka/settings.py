"""Every knob of the service in one typed object, read once from the environment.

Environment variables use the ``TIKKA_`` prefix (``TIKKA_MODEL_TAG``,
``TIKKA_MAX_UPLOAD_BYTES``...). List values are JSON (``TIKKA_CORS_ORIGINS='["https://a"]'``).
"""

from __future__ import annotations

import contextlib
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_NAME = "food-classifier"
# Settings that `bentoml build --arg NAME=...` bakes into a Bento (docker/delivery/build-bento.sh).
BUILD_ARGUMENTS = ("model_tag", "git_sha")


def cgroup_cpu_quota(cgroup_root: Path = Path("/sys/fs/cgroup"), own: Path = Path("/proc/self/cgroup")) -> float | None:
    """CPUs' worth of time this process's cgroup (or an ancestor) allows: cgroup v2's
    ``cpu.max`` of ``200000 100000``, or v1's ``cpu.cfs_quota_us`` over its period, is 2.0.
    None without a limit.

    By hand: neither the standard library (``os.process_cpu_count`` reads the affinity
    only) nor psutil reads the quota, and under Kubernetes or ``podman run --cpus`` the
    quota is the limit while every core of the node stays in the affinity.
    """
    try:
        lines = own.read_text().splitlines()
    except OSError:
        lines = []
    places = []  # (the hierarchy's root, this process's folder in it, v2?)
    for line in lines:
        _, controllers, relative = line.split(":", 2)
        if controllers == "":
            places.append((cgroup_root, relative, True))
        elif "cpu" in controllers.split(","):
            places += [(cgroup_root / name, relative, False) for name in (controllers, "cpu")]
    quotas = []
    for root, relative, v2 in places:
        folder = root / relative.strip().lstrip("/")
        while True:
            with contextlib.suppress(OSError, ValueError):
                if v2:
                    quota, period = (folder / "cpu.max").read_text().split()[:2]
                else:
                    quota, period = ((folder / f"cpu.cfs_{name}_us").read_text() for name in ("quota", "period"))
                if quota.strip() not in ("max", "-1"):
                    quotas.append(int(quota) / int(period))
            if folder == root or root not in folder.parents:
                break
            folder = folder.parent
    return min(quotas) if quotas else None


def available_cpus() -> int:
    """The CPUs this process may keep busy: its affinity, capped by the cgroup's quota
    (rounded up: 1500m is 2). os.cpu_count() is the node's, so a pod limited to 2 CPUs on
    a 32-core node ran 32 inference and 64 decode threads."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIKKA_", env_file=".env", extra="ignore")

    # Model
    model_tag: str = Field(
        f"{DEFAULT_MODEL_NAME}:latest",
        description="BentoML model store tag of the classifier to serve.",
    )
    git_sha: str = Field(
        "unknown",
        description="The commit the Bento was built from (a build argument; shown in / and tikka_build_info).",
    )
    runtime: Literal["auto", "openvino", "onnxruntime", "torch"] = Field(
        "auto",
        description=(
            "What runs the classifier: the ONNX graph exported at import time on OpenVINO or"
            " ONNX Runtime (fp32: outputs equal to torch within 1e-5; see TIKKA_PRECISION), or torch."
            " auto times both graph runtimes at start-up and serves the faster (shown in / and"
            " tikka_runtime_info)."
            " A checkpoint that did not export is served with torch whatever this says."
        ),
    )
    precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        "auto",
        description=(
            "The graph's numeric precision. auto times fp32 and each reduced precision that passed"
            " its agreement gate at import (>= 99% top-1 agreement with fp32; precision_gate.json"
            " beside the model) and that this CPU runs natively (bf16), with the runtimes, and"
            " serves the fastest. fp32 serves exactly the exported graph."
        ),
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="auto picks CUDA (then MPS for torch), then CPU."
    )
    inference_threads: int = Field(
        default_factory=available_cpus,
        ge=1,
        description="Threads the runtime uses per call; default: the CPUs of the process's cgroup quota, else its cores.",
    )
    top_k: int = Field(5, ge=1, le=100, description="Dishes in a /predict answer.")

    # Where models/download_model.py finds the production model (not read by the service).
    gcs_bucket: str = Field(
        "tikkamasalai-models", description="GCS bucket of the production model (models/download_model.py)."
    )
    gcs_prefix: str = Field("food-101-93m", description="Folder of the checkpoint in that bucket.")
    gcs_model_name: str = Field("food101-siglip", description="Model store name it is imported under.")

    # Adaptive batching. The offline split in benchmarks/REPORT.md puts the
    # exported graph's throughput within a few percent from batch 1 to 8 on a
    # 2-core CPU, so batches stop at 8. max_latency_ms is a shedding budget,
    # not a wait: a request predicted to take longer gets a fast 503 instead of
    # queueing towards the 60 s timeout.
    adaptive_batching: bool = Field(True, description="False: one forward pass per request.")
    one_process: bool = Field(
        False,
        description=(
            "The classifier in the gateway's own process: `bentoml serve` starts no second worker,"
            " so there is no hop between them and no adaptive batching. For one small VM where"
            " batching does not pay (benchmarks/REPORT.md); the Kubernetes split leaves it off."
        ),
    )
    max_batch_size: int = Field(8, ge=2, description="Largest adaptive batch.")
    max_latency_ms: int = Field(
        5_000, ge=100, description="Adaptive batching's latency budget: a request predicted to take longer gets a 503."
    )
    classifier_connection_max_age_s: float = Field(
        60.0,
        gt=0,
        description=(
            "How long the gateway keeps one pool of connections to the classifier beside it"
            " (BentoML's Unix socket). Deployed apart, each call has a connection of its own,"
            " which kube-proxy balances (tikka/bentoml_patches.py, workaround 7)."
        ),
    )
    max_batch_wait_ms: float = Field(
        2.0, ge=0, description="Longest a request is held back to batch with later ones (tikka/bentoml_patches.py)."
    )

    # Upload validation
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1, description="Request body limit of the upload routes.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Decoded image limit.")
    max_json_bytes: int = Field(64 * 1024, ge=1024, description="Body limit of the JSON (LLM) routes.")
    body_idle_timeout_s: float = Field(
        10.0, gt=0, description="Longest pause between body bytes before a 408 (slow uploads still pass)."
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description=(
            "Longest a whole request body may take before a 408: a client trickling a byte"
            " at a time holds its connection no longer. Behind nginx (the stacks) bodies arrive"
            " whole, at its speed."
        ),
    )
    max_buffered_body_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1,
        description="Request bodies the gateway holds at once, in bytes; past it, 429 (bodies are read whole before admission).",
    )
    decode_threads: int = Field(
        default_factory=lambda: 2 * available_cpus(),
        ge=1,
        description=(
            "Uploads decoded at once in the gateway. More threads than cores add memory, not"
            " speed: under 4000 px photos, 4 threads held about 50 MB less than 40, at the same req/s."
        ),
    )
    decode_memory_bytes: int = Field(
        512 * 1024 * 1024,
        ge=16 * 1024 * 1024,
        description=(
            "Memory the gateway's image decodes may hold at once, estimated from each header"
            " (a 6200x6200 WebP takes ~590 MB, a drafted phone JPEG a few). A larger image gets a 413;"
            " others wait for room."
        ),
    )
    decode_memory_wait_s: float = Field(
        10.0,
        ge=0,
        description="Longest an upload waits for room in that budget, or for a costly decode's turn, before a 429.",
    )
    decode_cpu_s: float = Field(
        1.0,
        gt=0,
        description=(
            "CPU seconds one image's decode may take; past it the decode is stopped and the"
            " client gets a 413. A 40 Mpx progressive JPEG photo took 0.54 s on a 2-core EPYC;"
            " a progressive JPEG of 90 scans in 10 MB, 1.2-2.1 s."
        ),
    )
    costly_decode_pixels: int = Field(
        24_000_000,
        ge=1,
        description=(
            "Pixels times passes over them (a JPEG's scans) above which a decode is costly:"
            " costly decodes take turns (TIKKA_COSTLY_DECODES at once), so a wave of them"
            " leaves cores to photos. A 12 Mpx baseline JPEG is 12 million."
        ),
    )
    costly_decodes: int = Field(
        default_factory=lambda: max(1, available_cpus() // 2),
        ge=1,
        description="Costly decodes at once (half the CPU quota's cores, at least one).",
    )
    jpeg_draft_decode: bool = Field(
        True,
        description=(
            "Let libjpeg decode large JPEGs at a reduced DCT scale that is still at least"
            " twice the model's resize size: ~5x faster decode, probabilities move by <1e-3."
        ),
    )

    # LLM sidecar (real Ollama in production, sidecar/ everywhere else)
    ollama_host: str = Field(
        "http://127.0.0.1:11434",
        validation_alias=AliasChoices("TIKKA_OLLAMA_HOST", "OLLAMA_HOST"),
        description="Where Ollama (or the embedded sidecar) listens; OLLAMA_HOST as Ollama spells it.",
    )
    ollama_model: str = Field("gemma3:270m", description="The model asked of Ollama.")
    llm_connect_timeout_s: float = Field(2.0, gt=0, description="Longest wait for a connection to Ollama.")
    llm_read_timeout_s: float = Field(60.0, gt=0, description="Longest wait for the next bytes.")
    llm_health_timeout_s: float = Field(1.5, gt=0, le=2.0, description="/llm/health gives up after this.")
    llm_max_prompt_chars: int = Field(4000, ge=1, description="Longer prompts are refused (422).")
    llm_max_tokens: int = Field(1024, ge=1, le=4096, description="The largest max_tokens a request may ask for.")
    llm_concurrency: int = Field(1, ge=1, description="Generations sent to Ollama at once (its OLLAMA_NUM_PARALLEL).")
    llm_queue_wait_s: float = Field(
        10.0, ge=0, description="Longest a request waits for a generation slot before a 503 llm_busy."
    )

    # HTTP
    cors_origins: list[str] = Field(
        default_factory=lambda: [
            "http://localhost:8501",
            "http://localhost:3000",
            "https://tikkamasalai.tech",
            "http://tikkamasalai.tech",
        ],
        description="Origins a browser may call the API from (JSON list).",
    )
    # Access control (tikka/http/auth.py): off while empty. JSON lists, several keys for rotation.
    api_keys: list[str] = Field(default_factory=list, description="Keys for the prediction and LLM routes.")
    metrics_keys: list[str] = Field(default_factory=list, description="Keys for /metrics and /dashboard.")
    require_auth: bool = Field(
        False,
        description="Refuse to start without TIKKA_API_KEYS (production: docker/k8s/configmap.yaml sets it).",
    )
    internal_token: str = Field(
        "",
        description=(
            "Shared by the gateway and the classifier served apart (docker/k8s): the classifier"
            " answers TCP callers only with it. Under `bentoml serve` the two talk over a private"
            " Unix socket and need none."
        ),
    )
    request_timeout_s: int = Field(60, ge=1, description="BentoML's request timeout.")
    readiness_timeout_s: int = Field(2, ge=1, description="/readyz gives up on the classifier after this.")
    readiness_checks_classifier: bool = Field(
        True,
        description=(
            "/readyz answers 503 while the classifier does not. Deployed apart (docker/k8s) it is"
            " off: one classifier outage took every gateway out of its Service, and clients got the"
            " ingress's HTML 503 instead of the gateway's JSON classifier_unavailable."
        ),
    )
    max_concurrency: int = Field(64, ge=1, description="Requests in flight before the gateway sheds with 429.")

    # bulk_classify (tikka/bulk/): a zip or tar of photos, or a gs:// prefix, as a BentoML task.
    bulk_archive_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="Largest archive bulk_classify takes (its request body), in bytes."
    )
    bulk_max_images: int = Field(
        5000,
        ge=1,
        description="Most members an archive may have (folders and non-images included), or images a gs:// prefix.",
    )
    bulk_member_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1,
        description="Largest uncompressed archive member or object, in bytes: a zip bomb is refused from its index.",
    )
    bulk_tasks: int = Field(2, ge=1, description="bulk_classify tasks running at once in a gateway; more get 429.")
    bulk_live_quiet_ms: float = Field(
        50.0,
        ge=0,
        description=(
            "Bulk images wait until /predict and /predict/explain have had no request in flight for this long,"
            " so that the live path is never slowed by a bulk task..."
        ),
    )
    bulk_max_wait_s: float = Field(
        2.0, ge=0, description="...but each bulk image waits at most this long, so a task moves on under steady load."
    )
    bulk_storage_timeout_s: float = Field(60.0, gt=0, description="Seconds per Cloud Storage call of a gs:// source.")
    # Per-client rate limit (tikka/http/ratelimit.py): off at 0. The client is the API key when
    # keys are configured, else the address; uvicorn takes the address from X-Forwarded-For
    # only for peers in FORWARDED_ALLOW_IPS (its own setting; default 127.0.0.1).
    rate_limit_per_s: float = Field(0.0, ge=0, description="Requests per second each client may sustain.")
    rate_limit_burst: int = Field(20, ge=1, description="Requests a client may send at once after a pause.")
    auth_failure_burst: int = Field(10, ge=1, description="Wrong API keys an address may send at once before 429s.")
    auth_failures_per_min: float = Field(
        30.0, gt=0, description="Wrong API keys an address may send per minute, sustained."
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Environment first; then the Bento's build arguments (`bentoml build --arg
    model_tag=...`), so a built Bento serves the model it was built with."""
    import bentoml

    arguments = vars(bentoml.use_arguments())
    overrides = {
        name: arguments[name]
        for name in BUILD_ARGUMENTS
        if name in arguments and f"TIKKA_{name.upper()}" not in os.environ
    }
    return Settings(**overrides)
