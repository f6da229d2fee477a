"""BentoML's own Python clients against a served Bento: every route, as BentoML's docs
show them (`bentoml.SyncHTTPClient(url).predict(image=Path(...))`).

The clients decide what is a file from the service's /schema.json; the upload type must
say "file" there, or they JSON-encode the Path and fail before sending anything.
A file object does not work with BentoML 1.4.40's clients whatever the service says: their
file manager asserts `isinstance(value, typing.BinaryIO)`, which no real file object is
(`_bentoml_impl/client/base.py`). A path (Path or str) and a PIL image do.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import bentoml
import pytest
from PIL import Image

from tests import helpers

pytestmark = pytest.mark.slow
PIZZA = helpers.ROOT / "tests" / "data" / "pizza.jpg"


def test_sync_client_classifies_and_explains_a_path_a_str_and_a_pil_image(bento):
    with bentoml.SyncHTTPClient(bento) as client:
        by_path = client.predict(image=PIZZA)
        by_str = client.predict(image=str(PIZZA))
        by_image = client.predict(image=Image.open(PIZZA))
        explained = client.explain(image=Path(PIZZA))
    for result in (by_path, by_str, by_image):
        assert next(iter(result["predictions"])) == "pizza" and len(result["predictions"]) == 5
        assert result["predictions"] == by_path["predictions"]
    assert by_path["filename"] == "pizza.jpg"
    assert explained["predicted_class"] == "pizza" and explained["heatmap"]


def test_async_client_classifies_and_explains(bento):
    async def calls():
        async with bentoml.AsyncHTTPClient(bento) as client:
            return await asyncio.gather(
                client.predict(image=PIZZA),
                client.predict(image=Image.open(io.BytesIO(PIZZA.read_bytes()))),
                client.explain(image=PIZZA),
            )

    by_path, by_buffer, explained = asyncio.run(calls())
    assert next(iter(by_path["predictions"])) == "pizza" and by_buffer["predictions"] == by_path["predictions"]
    assert explained["predicted_class"] == "pizza"


def test_both_clients_call_the_llm_routes(llm_bento):
    with bentoml.SyncHTTPClient(llm_bento) as client:
        generated = client.llm_generate(prompt="Pizza comes from", max_tokens=4, temperature=0.0, stream=False)
        dish = client.llm_dish(dish="pizza", task="origin", max_tokens=4, temperature=0.0, stream=False)

    async def async_dish():
        async with bentoml.AsyncHTTPClient(llm_bento) as client:
            return await client.llm_dish(dish="guacamole", task="recipe", max_tokens=4, temperature=0.0, stream=False)

    for answer in (generated, dish, asyncio.run(async_dish())):
        assert answer["response"].strip() and answer["eval_count"] >= 1, answer
