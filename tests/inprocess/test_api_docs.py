"""The published API document (docs/openapi.json, /openapi.json) and the /v1 routes.

The document is BentoML's, completed by tikka/http/openapi.py: it must be current,
describe every route with examples that fit their own schemas, list every error
of tikka/errors.py, and pass Redocly's linter. /v1 serves the same handlers.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import jsonschema
import pytest

from tests import helpers
from tikka.errors import CODES, ServiceError
from tikka.http.openapi import public_openapi
from tikka.http.routes import ROUTES
from tikka.tools import reference

DOCUMENT = helpers.ROOT / "docs" / "openapi.json"


@pytest.fixture(scope="module")
def spec(client) -> dict:
    return client.get("/openapi.json").json()


def test_committed_document_is_current(spec):
    """`make api-docs` rewrites docs/openapi.json; run it after changing a route or a schema."""
    from service import Gateway

    assert json.loads(DOCUMENT.read_text()) == spec == public_openapi(Gateway.openapi_spec.asdict())


def test_every_route_has_a_summary_description_and_examples(spec):
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), (method, path)
            if not path.startswith("/v1/"):
                continue
            assert operation.get("description") and operation.get("x-codeSamples"), (method, path)
            success = operation["responses"]["200"]["content"]["application/json"]
            assert success.get("example"), (method, path)
            if method == "post":  # JSON bodies have examples; a file has no inline value
                for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
                    assert media_type == "multipart/form-data" or media.get("examples"), (method, path)
    documented = {path for (_, path), route in ROUTES.items() if route.documented}
    assert documented == {p.removeprefix("/v1") for p in spec["paths"] if p.startswith("/v1/")}


def resolving(schema: dict, spec: dict) -> dict:
    return {**schema, "components": spec["components"]}


def test_examples_fit_their_schemas(spec):
    checked = 0
    for operations in spec["paths"].values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                for media in response.get("content", {}).values():
                    samples = [media["example"]] if "example" in media else []
                    samples += [e["value"] for e in media.get("examples", {}).values()]
                    if "schema" not in media or media["schema"].get("type") == "string":
                        continue
                    for sample in samples:
                        jsonschema.validate(
                            sample, resolving(media["schema"], spec), cls=jsonschema.Draft202012Validator
                        )
                        checked += 1
            for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
                if media_type == "application/json":
                    for example in media["examples"].values():
                        jsonschema.validate(
                            example["value"], resolving(media["schema"], spec), cls=jsonschema.Draft202012Validator
                        )
                        checked += 1
    assert checked > 40


def test_every_error_code_is_documented_with_its_status_and_example(spec):
    documented = set()
    for operations in spec["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                for name, example in (
                    response.get("content", {}).get("application/json", {}).get("examples", {}).items()
                ):
                    assert example["value"] == {"error": name, "detail": CODES[name].example}
                    assert CODES[name].status_code == int(status)
                    documented.add(name)
    # not_the_gateway is the classifier's own port's answer (split deployments), never the API's.
    assert documented == set(CODES) - {"not_the_gateway"}


def test_every_error_class_says_when_it_happens_and_gives_an_example():
    for code, cls in CODES.items():
        assert cls.__doc__ and cls.__doc__ != ServiceError.__doc__ and cls.example, code


def test_the_reference_pages_are_generated_from_the_code():
    """docs/reference/errors.md from the error classes, configuration.md from Settings."""
    for path, text in reference.render().items():
        assert path.read_text() == text, f"{path.name} is stale: make docs-reference"


def test_llm_routes_document_their_ndjson_stream(spec):
    for route in ("/v1/llm/generate", "/v1/llm/dish"):
        content = spec["paths"][route]["post"]["responses"]["200"]["content"]
        lines = content["application/x-ndjson"]["example"].strip().splitlines()
        assert json.loads(lines[-1])["done"] is True


def test_redocly_lints_the_document_clean():
    """Redocly's recommended rules (@redocly/cli from npm; `make api-docs` renders with it)."""
    npx = shutil.which("npx")
    if npx is None:
        pytest.skip("Node.js is not installed: `make api-docs` says how to get it")
    result = subprocess.run(
        [npx, "--yes", "@redocly/cli@2.77.0", "lint", "--format=summary", str(DOCUMENT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "is valid" in result.stdout + result.stderr, result.stdout + result.stderr


@pytest.mark.parametrize("route", ["/predict", "/predict/explain"])
def test_v1_routes_are_the_same_handlers(client, route):
    photo = {"image": ("pizza.jpg", (helpers.ROOT / "tests" / "data" / "pizza.jpg").read_bytes(), "image/jpeg")}
    plain, versioned = client.post(route, files=photo), client.post(f"/v1{route}", files=photo)
    assert plain.status_code == versioned.status_code == 200
    assert plain.json() == versioned.json()
    bad = {"image": ("notes.txt", b"hello", "text/plain")}
    assert client.post(route, files=bad).json() == client.post(f"/v1{route}", files=bad).json()
    assert client.post(f"/v1{route}", files=bad).status_code == 415


def test_only_known_routes_are_versioned(client):
    assert client.get("/v1/health").json() == client.get("/health").json()
    assert client.get("/v1/llm/health").status_code == 200
    for path in ("/v1/metrics", "/v1/readyz", "/v2/predict", "/v1/nothing"):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["error"], path
