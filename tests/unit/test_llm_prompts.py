"""Unit tests: prompt templates and model-name matching (no sidecar needed)."""

from __future__ import annotations

import pytest

from tikka.llm.client import TEMPLATES, dish_prompt, humanize_label, same_model


@pytest.mark.parametrize(
    ("label", "human"),
    [("huevos_rancheros", "Huevos Rancheros"), ("pizza", "Pizza"), ("hot-pot", "Hot Pot"), ("ice_cream", "Ice Cream")],
)
def test_labels_are_humanized(label, human):
    assert humanize_label(label) == human


@pytest.mark.parametrize("task", sorted(TEMPLATES))
def test_templates_end_with_the_answer_begun(task):
    prompt, begun = dish_prompt("huevos_rancheros", task)
    assert prompt.endswith(begun) and "Huevos Rancheros" in begun
    assert len(prompt) > len(begun)  # an instruction precedes the begun answer
    assert not begun.endswith((" ", "\n\n")), "completion should continue the text, not start a new block"


def test_model_names_match_like_ollama():
    assert same_model("gemma3:270m", "gemma3:270m")
    assert same_model("gemma3", "gemma3:latest")
    assert not same_model("gemma3:270m", "gemma3:1b")
