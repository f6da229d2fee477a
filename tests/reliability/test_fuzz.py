"""Fuzzing the contract: Schemathesis against the served Bento's own OpenAPI document,
and Hypothesis against the image decoder, with random and mutated photos.

Schemathesis generates requests for every public route from /openapi.json, within a
bounded number of examples per route, and checks each answer: never a 5xx that the
document does not list, and every status, content type, header and body conforms to
the document. The LLM routes talk to the real embedded sidecar; TIKKA_LLM_MAX_TOKENS
is 8 here, so the document itself bounds every generation to 8 tokens.
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from importlib.metadata import version

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.transport.serialization import Binary

from tests import helpers, records
from tikka.errors import ServiceError
from tikka.model.imaging import decode_upload

EXAMPLES_PER_ROUTE = 30
TRIED: Counter[str] = Counter()
STATUSES: dict[str, Counter[int]] = {}


@pytest.fixture(scope="module")
def fuzzed_bento(default_model, sidecar, tmp_path_factory):
    env = {
        "OLLAMA_HOST": sidecar.url,
        "TIKKA_LLM_MAX_TOKENS": "8",
        "TIKKA_LLM_QUEUE_WAIT_S": "30",
        "TIKKA_MAX_UPLOAD_BYTES": "2000000",
    }
    with helpers.served_bento(tmp_path_factory.mktemp("fuzzed"), env) as url:
        yield url


@st.composite
def photo_files(draw) -> bytes:
    """What a valid `image` is (the document can only say "binary"): a real photo of any
    size from 1 to 600 px a side, colour, format and quality."""
    from PIL import Image

    size = (draw(st.integers(1, 600)), draw(st.integers(1, 600)))
    colour = tuple(draw(st.integers(0, 255)) for _ in range(3))
    fmt = draw(st.sampled_from(["JPEG", "PNG", "WEBP", "GIF"]))
    return helpers.encode(Image.new("RGB", size, colour), fmt)


# Schema-valid uploads are photos; negative mode still sends anything in their place.
schemathesis.openapi.format("binary", photo_files())


def operation_ids(url: str) -> list[str]:
    return [
        f"{method.upper()} {path}"
        for path, ops in httpx.get(f"{url}/openapi.json").json()["paths"].items()
        for method in ops
    ]


@pytest.mark.slow
@pytest.mark.served
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_every_generated_request_gets_a_documented_answer(fuzzed_bento, mode):
    """Valid requests (positive) and invalid ones (negative: wrong types, missing fields,
    out-of-range values) for every operation. By Schemathesis's Python API: its pytest
    plugin (``from_fixture``) fails on pytest 9 (``'Function' object has no attribute '_nodeid'``)."""
    schema = schemathesis.openapi.from_url(f"{fuzzed_bento}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(operation_ids(fuzzed_bento)) >= 8
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and "requestBody" not in operation.definition.raw:
            continue  # nothing to make invalid in a GET without parameters
        fuzz(operation, mode, fuzzed_bento)
    assert sum(n for route, n in TRIED.items() if route.endswith(f"({mode.value})")) >= 2 * EXAMPLES_PER_ROUTE, TRIED


def archive_of_the_photo(case):
    """A valid `archive` is a zip of photos (the document can only say "binary", which makes a photo)."""
    if isinstance(case.body, dict) and isinstance(photo := case.body.get("archive"), Binary):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("photo.jpg", photo.data)
        case.body["archive"] = Binary(buffer.getvalue())
    return case


def fuzz(operation, mode: GenerationMode, url: str) -> None:
    route = f"{operation.method.upper()} {operation.path} ({mode.value})"
    strategy = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.POSITIVE and "/bulk_classify" in operation.path:
        strategy = strategy.map(archive_of_the_photo)

    @settings(
        max_examples=EXAMPLES_PER_ROUTE,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(case=strategy)
    def call(case) -> None:
        response = case.call_and_validate(base_url=url, timeout=60)
        TRIED[route] += 1
        STATUSES.setdefault(route, Counter())[response.status_code] += 1

    call()


def contract_fuzzing_record():
    if not TRIED:
        return None
    return [
        {
            "route (mode)": route,
            "requests": TRIED[route],
            "statuses": ", ".join(f"{status} x{n}" for status, n in sorted(STATUSES[route].items())),
            "5xx not in the document": 0,
            "schema violations": 0,
        }
        for route in sorted(TRIED)
    ], {
        "generator": f"Schemathesis {version('schemathesis')}, up to {EXAMPLES_PER_ROUTE} examples per route and mode,"
        " from the served /openapi.json; every check (status, content type, headers, body schema)"
    }


records.record_at_session_end("fuzz", "tests/reliability/test_fuzz.py (contract)", contract_fuzzing_record)


# ---- The decoder ----------------------------------------------------------------------

PHOTOS = {
    name: (helpers.ROOT / "tests" / "data" / name).read_bytes()
    for name in ("pizza.jpg", "guacamole.jpg", "hamburger.jpg")
}


def small_photos() -> dict[str, bytes]:
    """The sample photos at 128 px, as JPEG, PNG and WebP: small, so that Hypothesis runs fast."""
    found = {}
    for name, data in PHOTOS.items():
        from PIL import Image

        image = Image.open(io.BytesIO(data)).convert("RGB")
        image.thumbnail((128, 128))
        for fmt in ("JPEG", "PNG", "WEBP"):
            found[f"{name}.{fmt.lower()}"] = helpers.encode(image, fmt)
    return found


SMALL = small_photos()


@st.composite
def mutated_photo(draw) -> bytes:
    """A sample photo with bytes flipped, cut, inserted or duplicated."""
    data = bytearray(SMALL[draw(st.sampled_from(sorted(SMALL)))])
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert", "repeat"]))
        if action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 4096))]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 512))]
        if not data:
            break
    return bytes(data)


ANY_UPLOAD = st.one_of(st.binary(max_size=4096), mutated_photo())
DECODED: Counter[str] = Counter()
records.record_at_session_end(
    "fuzz",
    "tests/reliability/test_fuzz.py (decoder)",
    lambda: DECODED
    and (
        [{"outcome": outcome, "inputs": count} for outcome, count in sorted(DECODED.items())],
        {
            "generator": "Hypothesis: random bytes and sample photos (JPEG, PNG, WebP) with bytes flipped, cut,"
            " inserted or repeated; in process (decode_upload) and served (/predict)"
        },
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_UPLOAD)
def test_the_decoder_returns_an_image_or_a_4xx_error_for_any_bytes(data):
    try:
        image = decode_upload(data, max_pixels=4_000_000, draft_size=224)
    except ServiceError as exc:
        assert 400 <= exc.status_code < 500 and exc.detail
        DECODED[exc.error] += 1
    else:
        assert image.mode == "RGB" and image.width * image.height <= 4_000_000
        DECODED["decoded"] += 1


@pytest.mark.slow
@pytest.mark.served
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=ANY_UPLOAD, content_type=st.sampled_from(["image/jpeg", "image/png", "application/octet-stream"]))
def test_served_random_and_mutated_uploads_get_a_2xx_or_a_json_4xx(fuzzed_bento, data, content_type):
    response = httpx.post(f"{fuzzed_bento}/predict", files={"image": ("f", data, content_type)}, timeout=60)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/json" and response.json()["detail"]
    DECODED[f"served {response.status_code}"] += 1
