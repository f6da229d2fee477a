"""Unit tests: the classifier without HTTP, top-k, the food allow-list, device choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests import helpers
from tikka.classifier import (
    ImageClassifier,
    checkpoint_config,
    config_labels,
    select_device,
    top_k_labels,
)
from tikka.food_labels import FOOD_CLASSES
from tikka.imaging import ImagePreprocessor, decode_upload


@pytest.fixture(scope="module")
def classifier(default_model):
    return ImageClassifier(default_model.path, "cpu")


@pytest.fixture(scope="module")
def preprocessor(default_model):
    return ImagePreprocessor(default_model.path)


def classify(classifier, preprocessor, data: bytes, **decode_options) -> np.ndarray:
    image = decode_upload(data, max_pixels=40_000_000, **decode_options)
    return classifier.predict_proba(preprocessor(image)[None])[0]


def test_top_k_is_sorted_rounded_and_bounded():
    probabilities = np.array([0.1, 0.55555, 0.2, 0.05, 0.09, 0.00445])
    labels = ["a", "b", "c", "d", "e", "f"]
    top = top_k_labels(probabilities, labels, 5)
    assert list(top) == ["b", "c", "a", "e", "d"]
    assert top["b"] == 0.556 and top["e"] == 0.09
    assert len(top_k_labels(probabilities[:3], labels[:3], 5)) == 3


def test_allow_list_labels_are_the_imagenet_names_of_their_indices():
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    for index, label in FOOD_CLASSES.items():
        first_synonym = info.index_to_description(index).split(",")[0]
        assert label == first_synonym.lower().replace(" ", "_"), index
    assert not {923, 958, 966, 968} & set(FOOD_CLASSES), "plate, hay, red wine and cup are not dishes"


def test_store_model_serves_exactly_the_allow_list(classifier, default_model):
    expected = [FOOD_CLASSES[i] for i in sorted(FOOD_CLASSES)]
    assert classifier.labels == expected
    assert default_model.info.metadata["labels"] == expected
    assert config_labels(checkpoint_config(default_model.path)) == expected


@pytest.mark.parametrize(
    ("name", "dish"), [("pizza.jpg", "pizza"), ("guacamole.jpg", "guacamole"), ("hamburger.jpg", "cheeseburger")]
)
def test_sample_photos_get_their_dish(classifier, preprocessor, photo, name, dish):
    probabilities = classify(classifier, preprocessor, photo(name))
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)
    assert classifier.labels[int(probabilities.argmax())] == dish
    assert probabilities.max() > 0.9


def test_batched_inference_equals_one_by_one(classifier, preprocessor, photo):
    images = [preprocessor(decode_upload(photo(n), max_pixels=10**8)) for n in ("pizza.jpg", "guacamole.jpg", "hamburger.jpg")]
    batched = classifier.predict_proba(np.stack(images))
    single = np.concatenate([classifier.predict_proba(image[None]) for image in images])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_draft_decoding_barely_moves_probabilities(classifier, preprocessor):
    large = helpers.photo_image().resize((2560, 1600))
    data = helpers.encode(large, "JPEG", quality=92)
    full = classify(classifier, preprocessor, data)
    draft = classify(classifier, preprocessor, data, draft_size=preprocessor.draft_size)
    assert np.abs(full - draft).max() < 5e-3
    assert full.argmax() == draft.argmax()


def test_device_selection_honours_the_setting_and_falls_back_to_cpu():
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert select_device("auto").type == expected


def test_warm_up_runs_a_real_inference(classifier):
    shape = classifier.input_shape()
    assert shape == (3, 224, 224)
    classifier.warm_up()
