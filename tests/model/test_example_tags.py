"""Every example in the code and the docs names the model tag the embedded default import
really gives (its version is a hash of the weights, the labels and the recipe)."""

from __future__ import annotations

import re

from tests import helpers
from tikka.http.schemas import EXAMPLE_MODEL_TAG

DOCUMENTS = ("README.md", "docs", "tikka", "tests/api/bruno")


def test_every_example_tag_is_the_default_models_own(default_model):
    assert EXAMPLE_MODEL_TAG == str(default_model.tag)
    found = {}
    for root in DOCUMENTS:
        paths = [helpers.ROOT / root] if root.endswith(".md") else (helpers.ROOT / root).rglob("*")
        for path in paths:
            if path.is_file() and path.suffix in (".md", ".py", ".json", ".bru"):
                for tag in re.findall(r"food-classifier:[0-9a-f]{16}", path.read_text(errors="ignore")):
                    found.setdefault(tag, []).append(str(path.relative_to(helpers.ROOT)))
    assert set(found) == {EXAMPLE_MODEL_TAG}, found
