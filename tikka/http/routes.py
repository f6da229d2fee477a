"""The route table of the public API (``ROUTES``), and the one way a request's path is read.

A route is declared once here, with its handler beside it in tikka/services.py (or
tikka/http/api.py for a GET): the middlewares' route lists (tikka/http/stack.py) and the
OpenAPI document's additions (tikka/http/openapi.py) are derived from the table.

Every middleware that decides by route (the upload guard, the keys, the rate limit, load
shedding) reads ``route_of(scope)``, so a trailing slash cannot slip past one of them:
``/livez/`` is the probe ``/livez`` for all of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from tikka.http.schemas import EXAMPLE_MODEL_TAG, DishRequest, GenerateRequest
from tikka.model.formats import accepted_names

API_PREFIX = "/v1"


UPLOAD_ERRORS = (
    "empty_upload",
    "not_an_image",
    "not_a_file",
    "unexpected_field",
    "too_many_files",
    "malformed_form",
    "bad_request",
    "unauthorized",
    "request_timeout",
    "upload_too_large",
    "image_too_large",
    "image_too_costly",
    "unsupported_media_type",
    "missing_field",
    "too_many_requests",
    "classifier_busy",
    "classifier_unavailable",
    "classifier_timeout",
    "service_timeout",
)
LLM_ERRORS = (
    "bad_request",
    "unauthorized",
    "request_timeout",
    "request_too_large",
    "unsupported_media_type",
    "invalid_request",
    "invalid_prompt",
    "too_many_requests",
    "llm_error",
    "llm_unavailable",
    "llm_busy",
    "llm_model_missing",
    "llm_timeout",
    "service_timeout",
)
NDJSON_EXAMPLE = (
    '{"response": "Here is a simple recipe for pizza:\\n\\n", "done": false}\n'
    '{"response": "Ingredients", "done": false}\n'
    '{"response": "", "model": "gemma3:270m", "done": true, "done_reason": "stop", "eval_count": 48,'
    ' "duration_ms": 912.4}\n'
)
PIZZA = "@pizza.jpg"
ACCEPTED_IMAGES_TEXT = f"{accepted_names()}; docs/reference/formats.md"


@dataclass(frozen=True)
class Route:
    """A public route: how the gateway guards it (``kind``) and what the OpenAPI document says."""

    summary: str
    description: str
    curl: str
    errors: tuple[str, ...] = ()
    request_examples: dict[str, dict] = field(default_factory=dict)
    response_example: dict | None = None
    ndjson_example: str | None = None  # the route answers JSON Lines (NDJSON) too: an example
    # upload: a multipart photo in the field `image`; archive: a multipart archive in the field
    # `archive` (or `source` text); json: a JSON body checked against `schema`; read: no body.
    # Every route that can answer `unauthorized` takes the API keys.
    kind: Literal["upload", "archive", "json", "read"] = "read"
    schema: type[BaseModel] | None = None
    # False: served and guarded, but left out of the OpenAPI document (see its entry).
    documented: bool = True

    @property
    def keyed(self) -> bool:
        return "unauthorized" in self.errors


BULK = "/bulk_classify"
BULK_ERRORS = (
    "bad_source", "source_not_found", "source_forbidden", "not_an_archive", "unsafe_archive",
    "archive_too_large", "source_unreachable", "invalid_request",
    "not_a_file", "unexpected_field", "too_many_files", "malformed_form", "bad_request", "unauthorized",
    "request_timeout", "upload_too_large", "unsupported_media_type", "too_many_requests",
)  # fmt: skip
TASK_ERRORS = ("unauthorized", "task_not_found", "too_many_requests")
BULK_ROW = {"file": "dinner/pizza.heic", "predictions": {"pizza": 0.97, "lasagna": 0.01}, "model": EXAMPLE_MODEL_TAG}  # fmt: skip
BULK_ERROR_ROW = {"file": "broken.jpg", "error": {"status": 400, "code": "not_an_image", "detail": "the image data is corrupt"}}  # fmt: skip
BULK_ROWS = "".join(json.dumps(row) + "\n" for row in (BULK_ROW, BULK_ERROR_ROW))
# BentoML's task routes (`@bentoml.task`): submit, then poll status (or progress) and get the result.
BULK_ROUTES: dict[tuple[str, str], Route] = {
    ("post", f"{BULK}/submit"): Route(
        "Submit a bulk classification",
        "Every image of a zip or tar in the file field `archive` (plain or gzip), or under a Cloud Storage"
        " prefix in the text field `source` (`gs://bucket/prefix`), classified as a BentoML task:"
        " answers a `task_id` at once. The result (GET /v1/bulk_classify/get) is JSON Lines, one row per image"
        " in the `tikka classify` format; a failed image is a row with `error`, never a failed task. For a"
        " `source`, the rows are also written to `<prefix>/predictions.jsonl`. A hostile archive (a member"
        " that escapes it, a link, too many members, a zip bomb) fails the task whole, before a member is"
        " inflated. Bulk images run in the gaps of live /predict traffic.",
        f"curl -F archive=@photos.zip $BASE_URL/v1{BULK}/submit",
        BULK_ERRORS,
        response_example={"task_id": "5d0f3a8c9e1b4f2a8c7d6e5f4a3b2c1d", "status": "in_progress"},
        kind="archive",
    ),
    ("post", BULK): Route(
        "Bulk classification, answered when done",
        "The same as /v1/bulk_classify/submit in one request, for small archives: the request timeout applies.",
        f"curl -F archive=@photos.zip $BASE_URL/v1{BULK}",
        BULK_ERRORS,
        response_example=BULK_ROW,
        ndjson_example=BULK_ROWS,
        kind="archive",
    ),
    ("get", f"{BULK}/progress"): Route(
        "Bulk task progress",
        "How far a task is: `total` images, `done` (classified or failed), `failed`, `skipped` (not images),"
        " and `state` (`queued`, `running`, `completed`, `failed`). Kept for the gateway's last 256 tasks.",
        f"curl '$BASE_URL/v1{BULK}/progress?task_id=5d0f3a8c…'",
        TASK_ERRORS,
        response_example={
            "source": "photos.zip",
            "total": 120,
            "done": 57,
            "failed": 1,
            "skipped": 2,
            "state": "running",
        },
    ),
    ("get", f"{BULK}/status"): Route(
        "Bulk task status (BentoML's)",
        "`pending`, `in_progress`, `completed`, `failed` or `canceled`, with the task's times.",
        f"curl '$BASE_URL/v1{BULK}/status?task_id=5d0f3a8c…'",
        TASK_ERRORS,
        response_example={
            "task_id": "5d0f3a8c9e1b4f2a8c7d6e5f4a3b2c1d",
            "status": "completed",
            "created_at": "2026-12-07T19:33:19",
            "executed_at": "2026-12-07T19:33:19",
        },
    ),
    ("get", f"{BULK}/get"): Route(
        "Bulk task result",
        "The JSON Lines of a finished task, or its error body.",
        f"curl '$BASE_URL/v1{BULK}/get?task_id=5d0f3a8c…'",
        (*TASK_ERRORS, "task_not_finished", *BULK_ERRORS),
        response_example=BULK_ROW,
        ndjson_example=BULK_ROWS,
    ),
    ("post", f"{BULK}/retry"): Route(
        "Run a bulk task again (BentoML's)",
        "A new task on the same input.",
        f"curl -X POST '$BASE_URL/v1{BULK}/retry?task_id=5d0f3a8c…'",
        TASK_ERRORS,
        response_example={"task_id": "9e1b4f2a8c7d6e5f4a3b2c1d5d0f3a8c", "status": "in_progress"},
    ),
    ("put", f"{BULK}/cancel"): Route(
        "Cancel a bulk task (BentoML's)",
        "Served and keyed, but left out of the document: BentoML's own server answers every cancel with 400.",
        f"curl -X PUT '$BASE_URL/v1{BULK}/cancel?task_id=5d0f3a8c…'",
        TASK_ERRORS,
        documented=False,
    ),
}

# The public routes, each served as itself and under API_PREFIX (docs/routes.md): the one
# place a route is declared besides its handler (tikka/services.py, or tikka/http/api.py
# for a GET). The middlewares (tikka/http/stack.py) and the OpenAPI document
# (tikka/http/openapi.py) read it.
ROUTES: dict[tuple[str, str], Route] = {
    ("post", "/predict"): Route(
        "Classify a food photo",
        f"The top-5 dishes with probabilities, from a multipart upload in the field `image` ({ACCEPTED_IMAGES_TEXT})."
        " Other text fields are ignored. Runs behind adaptive batching.",
        f"curl -F image={PIZZA} $BASE_URL/v1/predict",
        UPLOAD_ERRORS,
        {},  # no request example: a file has no inline value (a placeholder string was sent as a photo)
        {
            "predictions": {"pizza": 0.999, "trifle": 0.0, "bagel": 0.0, "hot_pot": 0.0, "potpie": 0.0},
            "filename": "pizza.jpg",
            "model": EXAMPLE_MODEL_TAG,
        },
        kind="upload",
    ),
    ("post", "/predict/explain"): Route(
        "Explain a prediction",
        "Where the model looked: a heatmap (Grad-CAM for CNNs, attention rollout for ViT and SigLIP)"
        " blended over the photo and alone, as base64 PNGs, with the predicted class. The same uploads as"
        f" /predict ({ACCEPTED_IMAGES_TEXT}).",
        f"curl -F image={PIZZA} $BASE_URL/v1/predict/explain",
        (*UPLOAD_ERRORS, "explanation_unavailable"),
        {},
        {
            "predicted_class": "pizza",
            "confidence": 0.999,
            "attention_map": "iVBORw0KGgo...",
            "heatmap": "iVBORw0KGgo...",
            "num_layers": 1,
            "num_heads": 0,
            "grid_size": "7x7",
            "filename": "pizza.jpg",
            "method": "grad-cam",
            "model": EXAMPLE_MODEL_TAG,
        },
        kind="upload",
    ),
    ("post", "/llm/generate"): Route(
        "Generate text",
        'A completion from the LLM sidecar (Ollama, gemma3:270m). With `"stream": true` the answer is'
        " NDJSON: one record per token, then a final record with `done: true` (or an `error` record).",
        'curl -H \'Content-Type: application/json\' -d \'{"prompt": "Pizza comes from", "max_tokens": 32}\''
        " $BASE_URL/v1/llm/generate",
        LLM_ERRORS,
        {
            "prompt": {"summary": "a short completion", "value": {"prompt": "Pizza comes from", "max_tokens": 32}},
            "stream": {
                "summary": "streamed as NDJSON",
                "value": {"prompt": "Pizza comes from", "max_tokens": 32, "stream": True},
            },
        },
        {
            "response": "Pizza comes from Naples, Italy.",
            "model": "gemma3:270m",
            "done": True,
            "done_reason": "stop",
            "eval_count": 8,
            "duration_ms": 240.5,
        },
        ndjson_example=NDJSON_EXAMPLE,
        kind="json",
        schema=GenerateRequest,
    ),
    ("post", "/llm/dish"): Route(
        "A recipe, nutrition facts or the origin of a dish",
        "A completion-style prompt for one of three tasks about a dish (usually the predicted class)."
        " Streams NDJSON like /v1/llm/generate when `stream` is true.",
        'curl -H \'Content-Type: application/json\' -d \'{"dish": "pizza", "task": "recipe"}\' $BASE_URL/v1/llm/dish',
        LLM_ERRORS,
        {
            "recipe": {"summary": "a recipe", "value": {"dish": "pizza", "task": "recipe", "max_tokens": 200}},
            "origin": {
                "summary": "where it comes from, streamed",
                "value": {"dish": "guacamole", "task": "origin", "stream": True},
            },
        },
        {
            "response": "Here is a simple recipe for pizza:\n\nIngredients:\n- flour",
            "model": "gemma3:270m",
            "done": True,
            "done_reason": "length",
            "eval_count": 200,
            "duration_ms": 3120.0,
        },
        ndjson_example=NDJSON_EXAMPLE,
        kind="json",
        schema=DishRequest,
    ),
    ("get", "/health"): Route(
        "Process liveness",
        "200 while the service runs. Kubernetes probes use /livez and /readyz (unversioned).",
        "curl $BASE_URL/v1/health",
        response_example={"status": "ok"},
    ),
    ("get", "/llm/health"): Route(
        "LLM sidecar status",
        "Always 200 within about 2 s; the body says whether the LLM is `healthy`, `model_missing`"
        " (still being pulled) or `unavailable`.",
        "curl $BASE_URL/v1/llm/health",
        response_example={
            "status": "healthy",
            "ollama_url": "http://ollama:11434",
            "available_models": ["gemma3:270m"],
            "configured_model": "gemma3:270m",
        },
    ),
    **BULK_ROUTES,
}
# Infrastructure routes stay unversioned: probes, metrics, the pages.
UNVERSIONED = {
    "/": "Status banner",
    "/livez": "Liveness probe",
    "/readyz": "Readiness probe (503 until the model is loaded and the classifier answers)",
    "/healthz": "Health probe (BentoML's)",
    "/metrics": "Prometheus metrics",
    "/dashboard": "Metrics dashboard (HTML)",
}

UPLOAD_ROUTES = tuple(path for (_, path), route in ROUTES.items() if route.kind == "upload")
ARCHIVE_ROUTES = tuple(path for (_, path), route in ROUTES.items() if route.kind == "archive")
JSON_ROUTES = {path: route.schema for (_, path), route in ROUTES.items() if route.kind == "json"}
KEYED_ROUTES = tuple(path for (_, path), route in ROUTES.items() if route.keyed)
VERSIONED_PATHS = tuple(sorted({path for _, path in ROUTES}))
# Infrastructure: never versioned, never shed or rate-limited.
PROBES = ("/livez", "/readyz", "/healthz", "/health", "/metrics")


def route_of(scope: Scope) -> str:
    """The request's path without a trailing slash (``/`` stays ``/``)."""
    return scope["path"].rstrip("/") or "/"


class VersionedRoutes:
    """``/v1/<route>`` is ``<route>``: the same handlers, checks and contract.

    By hand because it is one path rewrite, outermost among the service's middlewares
    (so the upload guard, the keys and the limits see the route they know); BentoML
    has no route aliases. The unversioned routes stay for existing clients.
    """

    def __init__(self, app: ASGIApp, prefix: str = API_PREFIX, paths: tuple[str, ...] = VERSIONED_PATHS):
        self.app, self.prefix, self.paths = app, prefix, frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix + "/"):
            route = scope["path"][len(self.prefix) :]
            if route in self.paths:
                scope = {**scope, "path": route, "raw_path": route.encode()}
        await self.app(scope, receive, send)
