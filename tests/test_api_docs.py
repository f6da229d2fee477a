"""The published API document (docs/openapi.json, /openapi.json) and the /v1 routes.

The document is BentoML's, completed by tikka/http/openapi.py: it must be current,
describe every route with examples that fit their own schemas, list every error
of the README's table, and pass Redocly's linter. /v1 serves the same handlers.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import jsonschema
import pytest

from tests import helpers
from tikka.errors import CODES
from tikka.http.openapi import ERROR_EXAMPLES, ROUTES, public_openapi

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
                for media_type, media in operation["requestBody"]["content"].items():
                    assert media_type == "multipart/form-data" or media.get("examples"), (method, path)
    assert {path for _, path in ROUTES} == {p.removeprefix("/v1") for p in spec["paths"] if p.startswith("/v1/")}


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
                        jsonschema.validate(sample, resolving(media["schema"], spec),
                                            cls=jsonschema.Draft202012Validator)
                        checked += 1
            for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
                if media_type == "application/json":
                    for example in media["examples"].values():
                        jsonschema.validate(example["value"], resolving(media["schema"], spec),
                                            cls=jsonschema.Draft202012Validator)
                        checked += 1
    assert checked > 40


def test_error_responses_cover_the_readme_table(spec):
    readme = (helpers.ROOT / "README.md").read_text()
    table = readme.split("### Errors", 1)[1].split("**URLs are never fetched.**", 1)[0]
    readme_codes = set(re.findall(r"`([a-z_]+)`\s*(?:/|\|)", table)) - {"error", "image", "label"}
    documented = set()
    for operations in spec["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                for name, example in response.get("content", {}).get("application/json", {}).get("examples", {}).items():
                    assert example["value"]["error"] == name and CODES[name].status_code == int(status)
                    documented.add(name)
    assert len(readme_codes) >= 20, readme_codes
    assert readme_codes <= documented, readme_codes - documented
    assert documented <= set(ERROR_EXAMPLES)


def test_the_readme_error_table_is_the_error_hierarchy():
    """Each row's status is the status of its codes' classes in tikka/errors.py, and every
    class there is in the table: the hierarchy and the published contract are one."""
    readme = (helpers.ROOT / "README.md").read_text()
    table = readme.split("### Errors", 1)[1].split("**URLs are never fetched.**", 1)[0]
    rows = [line.split("|")[1:-1] for line in table.splitlines() if re.match(r"\| .* \| \d{3}", line)]
    in_table = {}
    for _, status, codes in rows:
        for code in re.findall(r"`([a-z_]+)`", codes):
            in_table[code] = int(status.split()[0])
    assert in_table == {code: cls.status_code for code, cls in CODES.items()}
    assert set(ERROR_EXAMPLES) == set(CODES)


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
    result = subprocess.run([npx, "--yes", "@redocly/cli@2.77.0", "lint", "--format=summary", str(DOCUMENT)],
                            capture_output=True, text=True, timeout=300)
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
