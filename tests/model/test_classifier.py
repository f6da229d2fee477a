"""Unit tests: the classifier without HTTP on every runtime, top-k, the allow-list, device choice.

The served runtimes (OpenVINO and ONNX Runtime on the graph exported at import
time) must give torch's answers: the same top-1 and probabilities within 1e-3.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import helpers
from tikka.model.checkpoint import Checkpoint
from tikka.model.cpu import cpu_has_bf16
from tikka.model.imaging import decode_upload
from tikka.model.labels import FOOD_CLASSES
from tikka.model.runtime import (
    GRAPH_RUNTIMES,
    GraphClassifier,
    TorchClassifier,
    fastest_graph_runtime,
    graph_candidates,
    load_classifier,
    seconds_per_image,
    select_device,
    time_in_child_process,
    top_k_labels,
)

RUNTIMES = ["openvino", "onnxruntime", "torch"]
SAMPLES = [("pizza.jpg", "pizza"), ("guacamole.jpg", "guacamole"), ("hamburger.jpg", "cheeseburger")]


@pytest.fixture(scope="module")
def classifiers(default_model):
    """Each runtime at fp32, the exported graph exactly."""
    return {runtime: load_classifier(default_model.path, runtime, "cpu", precision="fp32") for runtime in RUNTIMES}


@pytest.fixture(scope="module")
def spec(default_model):
    return Checkpoint.read(default_model.path).input_spec


def pixels(spec, data: bytes, **decode_options) -> np.ndarray:
    return spec.preprocess(decode_upload(data, max_pixels=40_000_000, **decode_options))


def generated_images(count: int, seed: int = 0) -> np.ndarray:
    """Photos cut, flipped and recoloured from the samples, plus noise: inputs torch has not seen."""
    rng = np.random.default_rng(seed)
    sources = [np.asarray(helpers.photo_image(name).resize((224, 224))) for name, _ in SAMPLES]
    images = []
    for i in range(count):
        image = sources[i % 3].astype(np.float32)
        if i % 4 == 1:
            image = image[:, ::-1]
        if i % 4 == 2:
            image = image * rng.uniform(0.5, 1.3, size=3)
        if i % 4 == 3:
            image = rng.uniform(0, 255, size=image.shape)
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return np.stack(images)


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


def test_store_model_serves_exactly_the_allow_list(classifiers, default_model):
    expected = [FOOD_CLASSES[i] for i in sorted(FOOD_CLASSES)]
    assert all(classifier.labels == expected for classifier in classifiers.values())
    assert default_model.info.metadata["labels"] == expected
    assert Checkpoint.read(default_model.path).labels == expected


def test_the_store_model_carries_its_onnx_graph(default_model, classifiers):
    assert (Path(default_model.path) / "model.onnx").is_file()
    assert default_model.info.metadata["onnx_graph"] == "model.onnx"
    assert isinstance(classifiers["openvino"], GraphClassifier) and classifiers["openvino"].runtime == "openvino"
    assert isinstance(classifiers["onnxruntime"], GraphClassifier)
    assert isinstance(classifiers["torch"], TorchClassifier)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize(("name", "dish"), SAMPLES)
def test_sample_photos_get_their_dish(classifiers, spec, photo, runtime, name, dish):
    probabilities = classifiers[runtime].predict_proba(pixels(spec, photo(name))[None])[0]
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)
    assert classifiers[runtime].labels[int(probabilities.argmax())] == dish
    assert probabilities.max() > 0.9


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_served_runtimes_match_torch(classifiers, spec, photo, runtime):
    """Same top-1, probabilities within 1e-3, on the samples and 200 generated images."""
    batch = np.concatenate([np.stack([pixels(spec, photo(name)) for name, _ in SAMPLES]), generated_images(200)])
    reference = np.concatenate([classifiers["torch"].predict_proba(chunk) for chunk in np.array_split(batch, 25)])
    served = np.concatenate([classifiers[runtime].predict_proba(chunk) for chunk in np.array_split(batch, 25)])
    assert (served.argmax(axis=1) == reference.argmax(axis=1)).all()
    assert np.abs(served - reference).max() < 1e-3


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_batched_inference_equals_one_by_one(classifiers, spec, photo, runtime):
    images = np.stack([pixels(spec, photo(name)) for name, _ in SAMPLES])
    batched = classifiers[runtime].predict_proba(images)
    single = np.concatenate([classifiers[runtime].predict_proba(image[None]) for image in images])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_draft_decoding_barely_moves_probabilities(classifiers, spec):
    large = helpers.photo_image().resize((2560, 1600))
    data = helpers.encode(large, "JPEG", quality=92)
    full = classifiers["openvino"].predict_proba(pixels(spec, data)[None])
    draft = classifiers["openvino"].predict_proba(pixels(spec, data, draft_size=spec.draft_size)[None])
    assert np.abs(full - draft).max() < 5e-3
    assert full.argmax() == draft.argmax()


def test_a_checkpoint_without_a_graph_is_served_with_torch_and_says_so(default_model, tmp_path, caplog):
    directory = tmp_path / "no-graph"
    shutil.copytree(default_model.path, directory, ignore=shutil.ignore_patterns("model.onnx"))
    with caplog.at_level(logging.WARNING, logger="tikka.model.runtime"):
        classifier = load_classifier(directory, "openvino", "cpu")
    assert isinstance(classifier, TorchClassifier)
    assert "serving it with torch" in caplog.text
    assert classifier.labels[int(classifier.predict_proba(generated_images(1))[0].argmax())]


def test_device_selection_honours_the_setting_and_falls_back_to_cpu():
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert select_device("auto").type == expected


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_warm_up_runs_a_real_inference(classifiers, runtime):
    classifiers[runtime].warm_up()
    assert classifiers[runtime].input_spec.height == 224


def test_auto_serves_the_runtime_and_precision_it_measured_fastest(default_model):
    chosen = load_classifier(default_model.path, "auto", "cpu")
    candidates = graph_candidates(Path(default_model.path))
    assert set(GRAPH_RUNTIMES) <= set(candidates) and set(chosen.timings) == set(candidates)
    assert chosen.timings[chosen.runtime] == min(chosen.timings.values())


@pytest.mark.parametrize("forced", ["openvino", "onnxruntime", "openvino-bf16", "openvino-int8"])
def test_each_candidate_is_served_when_it_is_the_fastest(default_model, forced):
    """Every other candidate made slower: its calls take 200 ms more (an injected delay,
    in-process: the one way to make a real runtime slower on demand). The forced one is
    served. A reduced precision takes part only where it passed its gate (and, for bf16,
    where this CPU has bf16): the candidates here are what the store model offers."""
    candidates = tuple(graph_candidates(Path(default_model.path)))
    if forced not in candidates:  # not offered here: the gate or the CPU says why
        gate = json.loads((Path(default_model.path) / "precision_gate.json").read_text())
        precision = forced.partition("-")[2]
        assert not gate[precision]["passed"] or (precision == "bf16" and not cpu_has_bf16()), gate
        return

    def timer(model_path, runtime, device, threads):
        classifier = GraphClassifier(model_path, runtime, device, threads)
        if runtime != forced:
            real = classifier.predict_proba
            classifier.predict_proba = lambda pixels: (time.sleep(0.2), real(pixels))[1]
        return seconds_per_image(classifier)

    chosen = fastest_graph_runtime(default_model.path, candidates, "cpu", 1, timer)
    assert chosen.runtime == forced
    assert all(seconds > chosen.timings[forced] + 0.1 for name, seconds in chosen.timings.items() if name != forced)
    spec = chosen.input_spec
    assert chosen.predict_proba(np.zeros((1, spec.height, spec.width, 3), np.uint8)).shape == (1, len(chosen.labels))


def test_a_candidate_that_dies_is_left_out_and_the_classifier_lives(default_model, caplog):
    """Each candidate runs in a child process of its own (ONNX Runtime segfaulted under
    QEMU's arm64 emulation): one that exits is left out with a log line."""
    with caplog.at_level(logging.WARNING, logger="tikka.model.runtime"):
        chosen = fastest_graph_runtime(default_model.path, ("no-such-runtime", "openvino"), "cpu", 1)
    assert chosen.runtime == "openvino" and set(chosen.timings) == {"openvino"}
    assert "no-such-runtime failed" in caplog.text and "ValueError" in caplog.text
    assert time_in_child_process(default_model.path, "openvino", "cpu", 1) > 0
