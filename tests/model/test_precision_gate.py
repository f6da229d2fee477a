"""Reduced precisions behind an agreement gate (tikka/tools/quantize.py), and which of them the
start-up choice may time (tikka/model/runtime.py, graph_candidates)."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import numpy as np
import pytest

from tikka.model import runtime
from tikka.model.checkpoint import GATE_FILE, INT8_FILE
from tikka.tools import quantize


def outputs(top1: list[int], classes: int = 5, maps: np.ndarray | None = None):
    probabilities = np.full((len(top1), classes), 0.1 / (classes - 1))
    probabilities[np.arange(len(top1)), top1] = 0.9
    return probabilities, maps


def test_the_gate_passes_99_percent_top1_agreement_and_fails_below():
    reference = outputs([0] * 100)
    assert quantize.agreement(reference, outputs([0] * 99 + [1])).passed
    failing = quantize.agreement(reference, outputs([0] * 98 + [1, 1]))
    assert not failing.passed and failing.top1_agreement == 0.98
    assert failing.max_probability_difference == pytest.approx(0.875)


def test_the_gate_fails_explanation_maps_that_moved():
    rng = np.random.default_rng(0)
    maps = rng.random((20, 7, 7))
    reference = outputs([0] * 20, maps=maps)
    assert quantize.agreement(reference, outputs([0] * 20, maps=maps + 0.01 * rng.random((20, 7, 7)))).passed
    moved = quantize.agreement(reference, outputs([0] * 20, maps=rng.random((20, 7, 7))))
    assert not moved.passed and moved.top1_agreement == 1.0 and moved.explanation_correlation < 0.5


def write_gate(folder: Path, int8: bool, bf16: bool, int8_file: bool = True, machine: str = platform.machine()) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / GATE_FILE).write_text(
        json.dumps({"int8": {"passed": int8}, "bf16": {"passed": bf16}, "machine": machine})
    )
    if int8_file:
        (folder / INT8_FILE).write_text("<net/>")
    return folder


@pytest.mark.parametrize("has_bf16", [True, False])
def test_only_what_passed_its_gate_and_runs_natively_is_a_candidate(tmp_path, monkeypatch, has_bf16):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: has_bf16)
    both = write_gate(tmp_path / "both", int8=True, bf16=True)
    expected_bf16 = ["openvino-bf16"] if has_bf16 else []
    assert runtime.graph_candidates(both) == ["openvino", *expected_bf16, "openvino-int8", "onnxruntime"]
    assert runtime.graph_candidates(both, "onnxruntime") == ["onnxruntime"]
    assert runtime.graph_candidates(both, precision="fp32") == ["openvino", "onnxruntime"]
    assert runtime.graph_candidates(both, precision="int8") == ["openvino-int8"]
    failed = write_gate(tmp_path / "failed", int8=False, bf16=False)
    assert runtime.graph_candidates(failed) == ["openvino", "onnxruntime"]
    with pytest.raises(RuntimeError, match="TIKKA_PRECISION=int8"):
        runtime.graph_candidates(failed, precision="int8")
    no_file = write_gate(tmp_path / "no-file", int8=True, bf16=False, int8_file=False)
    assert "openvino-int8" not in runtime.graph_candidates(no_file)
    assert runtime.graph_candidates(tmp_path / "no-gate-at-all") == ["openvino", "onnxruntime"]


def test_a_gate_passed_on_another_architecture_offers_nothing_here(tmp_path, monkeypatch):
    """The int8 graph that passed on x86_64 agreed on 0 of 8 photos in the emulated arm64 image."""
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    elsewhere = "aarch64" if platform.machine() != "aarch64" else "x86_64"
    foreign = write_gate(tmp_path / "foreign", int8=True, bf16=True, machine=elsewhere)
    assert runtime.graph_candidates(foreign) == ["openvino", "onnxruntime"]
    with pytest.raises(RuntimeError, match=f"on {elsewhere} machine"):
        runtime.graph_candidates(foreign, precision="bf16")


def test_the_store_model_records_its_gate_and_keeps_int8_only_if_it_passed(default_model):
    """EfficientNet-Lite0's real weights, gated at import on this machine."""
    path = Path(default_model.path)
    gate = json.loads((path / GATE_FILE).read_text())
    for precision in ("int8", "bf16"):
        result = gate[precision]
        if "error" not in result:
            assert result["passed"] == (result["top1_agreement"] >= 0.99 and result["explanation_correlation"] >= 0.9)
    assert (path / INT8_FILE).is_file() == gate["int8"]["passed"]
    assert default_model.info.metadata["precisions_passed"] == [p for p in ("int8", "bf16") if gate[p]["passed"]]


def test_an_int8_graph_below_the_threshold_is_deleted_and_never_served(default_model, tmp_path, monkeypatch):
    """The gate run for real on a copy of the store model, with a threshold no graph can meet."""
    copy = tmp_path / "model"
    shutil.copytree(default_model.path, copy, ignore=shutil.ignore_patterns(INT8_FILE, "*.bin", GATE_FILE))
    monkeypatch.setattr(quantize, "MIN_TOP1_AGREEMENT", 1.01)
    monkeypatch.setattr(quantize, "CALIBRATION_IMAGES", 16)
    monkeypatch.setattr(quantize, "HELD_OUT_IMAGES", 32)
    report = quantize.gate_reduced_precisions(copy)
    assert report["int8"]["passed"] is False and 0.5 < report["int8"]["top1_agreement"] <= 1.0
    assert not (copy / INT8_FILE).exists() and not (copy / INT8_FILE).with_suffix(".bin").exists()
    assert json.loads((copy / GATE_FILE).read_text()) == report
    assert all("-" not in name for name in runtime.graph_candidates(copy))


def test_the_check_where_the_model_serves_repeats_the_import_gate_on_the_same_machine(default_model, capsys):
    """``python -m tikka.tools.quantize`` (the arm64 image's smoke step): each reduced precision
    offered here, against fp32 here; on the machine that imported, the gate's own figures.
    ``--every`` also measures those not offered (bf16 where the CPU has it, the int8 graph)."""
    path = Path(default_model.path)
    gate = json.loads((path / GATE_FILE).read_text())
    offered = {name for name in runtime.graph_candidates(path, "openvino") if name != "openvino"}
    assert quantize.main([str(quantize.HELD_OUT_IMAGES), str(path), "--every"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["offered here"] == sorted(offered) and offered <= printed.keys()
    for name in printed.keys() & {"openvino-int8", "openvino-bf16"}:
        assert printed[name] == {key: gate[name.partition("-")[2]][key] for key in printed[name]}, name
