"""The public API document: BentoML's generated OpenAPI, completed into the contract.

BentoML documents each API as 200/400/404/500 with its own error schemas and no
streaming. This module rewrites that into what clients get: the /v1 routes, a
summary, a description and a curl sample per route, the NDJSON stream of the LLM
routes, and every error answer with an example of its JSON body (docs/reference/errors.md's
error table). Served at /openapi.json (Swagger UI at /docs); `make api-docs`
writes it to docs/openapi.json, which a test keeps in step.

    python -m tikka.tools.openapi_document > docs/openapi.json
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field

from tikka.errors import CODES
from tikka.http.routes import API_PREFIX
from tikka.model.formats import accepted_names

# An example detail for each error code, from its class in tikka/errors.py.
ERROR_EXAMPLES: dict[str, str] = {code: cls.example for code, cls in CODES.items()}

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
    summary: str
    description: str
    curl: str
    errors: tuple[str, ...] = ()
    request_examples: dict[str, dict] = field(default_factory=dict)
    response_example: dict | None = None
    streams: bool = False


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
            "model": "food-classifier:96f15d70ef17a141",
        },
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
            "model": "food-classifier:96f15d70ef17a141",
        },
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
        streams=True,
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
        streams=True,
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
KEYED = [{}, {"bearer": []}, {"api_key": []}]  # optional: only when TIKKA_API_KEYS is set


def error_responses(codes: tuple[str, ...]) -> dict[str, dict]:
    by_status: dict[int, dict[str, dict]] = {}
    for code in codes:
        example = {"summary": code, "value": {"detail": ERROR_EXAMPLES[code], "error": code}}
        by_status.setdefault(CODES[code].status_code, {})[code] = example
    return {
        str(status): {
            "description": ", ".join(f"`{code}`" for code in examples),
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}, "examples": examples}
            },
        }
        for status, examples in sorted(by_status.items())
    }


def public_openapi(generated: dict) -> dict:
    """BentoML's document (``Service.openapi_spec.asdict()``) -> the published contract."""
    spec = copy.deepcopy(generated)
    # pydantic writes JSON Schema 2020-12 (`examples` lists, `type: "null"`): OpenAPI 3.1's dialect.
    spec["openapi"] = "3.1.0"
    spec["info"]["license"] = {"name": "MIT", "identifier": "MIT"}
    spec["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "One of TIKKA_API_KEYS."},
        "api_key": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "One of TIKKA_API_KEYS."},
    }
    spec["info"]["title"] = "TikkaMasalAI API"
    spec["info"]["description"] = (
        "Food photo classification, explanations and LLM helpers. Every route below is served under"
        f" `{API_PREFIX}`; the same routes without the prefix stay for existing clients (see docs/routes.md's"
        ' versioning policy). Every error body is `{"detail": ..., "error": ...}`.'
    )
    spec["components"]["schemas"]["ErrorResponse"] = {
        "type": "object",
        "required": ["detail", "error"],
        "properties": {
            "detail": {"type": "string", "description": "What was wrong, and what to do about it."},
            "error": {"type": "string", "description": "A stable machine-readable code."},
        },
    }
    paths = {}
    for path, operations in spec["paths"].items():
        if path in UNVERSIONED:
            for method, operation in operations.items():
                operation["summary"] = UNVERSIONED[path]
                operation.setdefault("operationId", f"{method}{path.replace('/', '_')}".rstrip("_"))
                operation["security"] = [{}]
            paths[path] = operations
            continue
        for method, operation in operations.items():
            route = ROUTES[(method, path)]
            operation.update(
                summary=route.summary, description=route.description, operationId=f"v1{path.replace('/', '_')}"
            )
            operation["x-codeSamples"] = [{"lang": "curl", "source": route.curl}]
            operation["security"] = KEYED if "unauthorized" in route.errors else [{}]
            success = operation["responses"].get(200) or operation["responses"].get("200")
            success["description"] = "OK"
            content = success.setdefault("content", {}).setdefault("application/json", {})
            content["example"] = route.response_example
            if route.streams:
                success["content"]["application/x-ndjson"] = {
                    "schema": {"type": "string", "description": "One JSON record per line."},
                    "example": NDJSON_EXAMPLE,
                }
            if "requestBody" in operation:  # BentoML leaves it optional; every route here needs one
                operation["requestBody"]["required"] = True
            if route.request_examples:
                for media in operation["requestBody"]["content"].values():
                    media["examples"] = route.request_examples
            operation["responses"] = {"200": success, **error_responses(route.errors)}
        paths[API_PREFIX + path] = operations
    spec["paths"] = dict(sorted(paths.items()))
    drop_unused_schemas(spec)
    return spec


def drop_unused_schemas(spec: dict) -> None:
    """BentoML lists schemas that no route uses once its own error answers are replaced
    (InvalidArgument, NotFound, InternalServerError, per-API inputs, task status)."""
    schemas = spec["components"]["schemas"]
    used: set[str] = set()
    pending = [json.dumps(spec["paths"])]
    while pending:
        for name in re.findall(r'"#/components/schemas/([^"]+)"', pending.pop()):
            if name not in used:
                used.add(name)
                pending.append(json.dumps(schemas[name]))
    for name in set(schemas) - used:
        del schemas[name]
