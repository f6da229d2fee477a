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

from tikka.bulk.gcs import SOURCE
from tikka.errors import CODES
from tikka.http.routes import API_PREFIX, ROUTES, UNVERSIONED

# An example detail for each error code, from its class in tikka/errors.py.
ERROR_EXAMPLES: dict[str, str] = {code: cls.example for code, cls in CODES.items()}

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
    if status := spec["components"]["schemas"].get("TaskStatusResponse"):
        correct_task_status(status)
    paths = {}
    for path, operations in spec["paths"].items():
        if path in UNVERSIONED:
            for method, operation in operations.items():
                operation["summary"] = UNVERSIONED[path]
                operation.setdefault("operationId", f"{method}{path.replace('/', '_')}".rstrip("_"))
                operation["security"] = [{}]
            paths[path] = operations
            continue
        for method, operation in list(operations.items()):
            route = ROUTES[(method, path)]
            if not route.documented:
                del operations[method]
                continue
            operation.update(
                summary=route.summary, description=route.description, operationId=f"v1{path.replace('/', '_')}"
            )
            operation["x-codeSamples"] = [{"lang": "curl", "source": route.curl}]
            operation["security"] = KEYED if "unauthorized" in route.errors else [{}]
            success = operation["responses"].get(200) or operation["responses"].get("200")
            success["description"] = "OK"
            content = success.setdefault("content", {}).setdefault("application/json", {})
            content["example"] = route.response_example
            if route.ndjson_example:
                success["content"].pop("text/plain", None)  # BentoML's word for a `str` answer
                success["content"]["application/x-ndjson"] = {
                    "schema": {"type": "string", "description": "One JSON record per line."},
                    "example": route.ndjson_example,
                }
            if "requestBody" in operation:  # BentoML leaves it optional; every route here needs one
                operation["requestBody"]["required"] = True
            if route.kind == "archive":
                require_archive_or_source(operation["requestBody"]["content"])
            if route.request_examples:
                for media in operation["requestBody"]["content"].values():
                    media["examples"] = route.request_examples
            operation["responses"] = {"200": success, **error_responses(route.errors)}
        if operations:
            paths[API_PREFIX + path] = operations
    spec["paths"] = dict(sorted(paths.items()))
    drop_unused_schemas(spec)
    return spec


def correct_task_status(schema: dict) -> None:
    """BentoML 1.4.40 documents its task status as what its server does not send: the submit
    answer has no times, and the states are its ResultStatus values (_bentoml_impl/tasks/result.py)."""
    schema["required"] = ["task_id", "status"]
    schema["properties"]["status"]["enum"] = ["pending", "in_progress", "completed", "failed", "canceled"]


def require_archive_or_source(content: dict) -> None:
    """bulk_classify takes one of its two optional fields, documented as two forms: an archive
    needs multipart; a source alone may be a plain form (a `oneOf` of two `required` lists read
    the same, but Schemathesis's negative cases of it are not always invalid)."""
    multipart = content["multipart/form-data"]
    properties = multipart["schema"]["properties"]
    archive = {**properties["archive"], "description": "A zip or tar (plain, gzip, bzip2 or xz) of photos"}
    source = {
        "type": "string",
        "pattern": SOURCE.pattern,
        "description": "A Cloud Storage prefix: gs://bucket/prefix (also accepted as a multipart field)",
        "examples": ["gs://my-photos/week-49"],
    }
    content.clear()
    content["multipart/form-data"] = {
        "schema": {"type": "object", "title": "Archive", "required": ["archive"], "properties": {"archive": archive}}
    }
    content["application/x-www-form-urlencoded"] = {
        "schema": {"type": "object", "title": "Source", "required": ["source"], "properties": {"source": source}},
        "examples": {"source": {"summary": "a bucket prefix", "value": {"source": "gs://my-photos/week-49"}}},
    }


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
