"""Model loading, batched inference, explanations and top-k, on OpenVINO, ONNX Runtime or torch.

No HTTP in here: the classifier is usable (and tested) on its own. Every runtime
takes what the gateway ships, uint8 pixels (N, H, W, 3) already resized and
cropped, and normalises a whole batch at once. The graph runtimes serve the graph
exported at import time (tikka/tools/export.py), in fp32 or in a reduced precision
that passed its agreement gate (tikka/tools/quantize.py); which one serves is
measured at start-up. Torch serves a checkpoint that has no export, and is
imported only then.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tikka.model.checkpoint import GATE_FILE, INT8_FILE, ONNX_FILE, Checkpoint
from tikka.model.cpu import cpu_has_bf16, cpu_label
from tikka.model.explain import Explanation, attention_shape
from tikka.model.imaging import InputSpec
from tikka.settings import available_cpus

logger = logging.getLogger(__name__)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def select_device(preference: str = "auto"):
    """CUDA, then Apple MPS, then CPU, unless the settings name one (torch runtime)."""
    import torch

    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


GRAPH_RUNTIMES = ("openvino", "onnxruntime")
# Reduced precisions run on OpenVINO only: ONNX Runtime's CPU provider has no bf16 kernels,
# and one int8 graph is enough to gate.
REDUCED_PRECISIONS = ("bf16", "int8")


def graph_candidates(model_path: Path, runtime: str = "auto", precision: str = "auto") -> list[str]:
    """The graph runtimes to time, as ``<runtime>`` (fp32) or ``<runtime>-<precision>``: those
    the settings allow, and for a reduced precision only where it passed its gate at import,
    on this machine's architecture, and, for bf16, where this CPU has bf16 instructions.

    The architecture matters because a reduced precision's numbers are its kernels': the int8
    graph that agreed with fp32 on 99.2% of the photos on x86_64 agreed on 0 of 8 in the
    emulated arm64 image (OpenVINO's arm64 int8 kernels or QEMU's emulation of them;
    docs/architecture.md)."""
    gate = json.loads(path.read_text()) if (path := model_path / GATE_FILE).is_file() else {}
    here = gate.get("machine") == platform.machine()
    available = {
        "int8": here and gate.get("int8", {}).get("passed") and (model_path / INT8_FILE).is_file(),
        "bf16": here and gate.get("bf16", {}).get("passed") and cpu_has_bf16(),
    }
    candidates = []
    for name in GRAPH_RUNTIMES if runtime == "auto" else (runtime,):
        if precision in ("auto", "fp32"):
            candidates.append(name)
        for reduced in REDUCED_PRECISIONS:
            if name == "openvino" and precision in ("auto", reduced) and available[reduced]:
                candidates.append(f"{name}-{reduced}")
    if not candidates:
        why = {reduced: gate.get(reduced, {"error": "no gate was run at import"}) for reduced in REDUCED_PRECISIONS}
        raise RuntimeError(
            f"TIKKA_PRECISION={precision} with TIKKA_RUNTIME={runtime}: nothing to serve"
            f" {model_path.name} with (the gate at import, on {gate.get('machine', 'no')}"
            f" machine: {why}; this CPU: {cpu_label()})"
        )
    return candidates


def load_classifier(
    model_path: str | Path,
    runtime: str = "auto",
    device: str = "auto",
    threads: int | None = None,
    precision: str = "auto",
) -> GraphClassifier | TorchClassifier:
    """The configured runtime and precision (``auto``: the fastest graph runtime and precision,
    measured here), or torch (with a log line) for a checkpoint that has no ONNX export."""
    model_path = Path(model_path)
    if runtime in ("auto", *GRAPH_RUNTIMES):
        if (model_path / ONNX_FILE).is_file():
            candidates = graph_candidates(model_path, runtime, precision)
            if len(candidates) == 1:  # nothing to choose between
                return GraphClassifier(model_path, candidates[0], device, threads)
            return fastest_graph_runtime(model_path, tuple(candidates), device, threads)
        logger.warning("%s has no %s (its architecture did not export): serving it with torch", model_path, ONNX_FILE)
    try:
        import torch  # noqa: F401
    except ImportError:
        raise RuntimeError(
            f"{model_path} must be served with torch, which is not installed here: package"
            " requirements/models.txt with the Bento (bentofile.yaml, python.requirements_txt)"
        ) from None
    return TorchClassifier(model_path, device, threads)


def fastest_graph_runtime(
    model_path: str | Path,
    candidates: tuple[str, ...],
    device: str = "auto",
    threads: int | None = None,
    timer: Callable[..., float | None] | None = None,
) -> GraphClassifier:
    """Each candidate timed on one image, each in a process of its own; the fastest is served.

    Which runtime and precision win depend on the CPU and on the model (OpenVINO by far on
    EfficientNet-Lite0 here, benchmarks/REPORT.md; nothing says it also does on
    SigLIP-B/16 or on Axion), so it is measured where the classifier serves. In a child process because a runtime
    can crash on a CPU it mis-detects (ONNX Runtime 1.31 segfaulted under QEMU's arm64
    emulation): a candidate that dies is left out, with a log line, and the classifier
    lives on. Only the winner is loaded here, so one model is in memory at a time.
    ``timer(model_path, runtime, device, threads)`` gives seconds per image, or None.
    """
    model_path, timer = Path(model_path), timer or time_in_child_process
    timings = {
        runtime: seconds
        for runtime in candidates
        if (seconds := timer(model_path, runtime, device, threads)) is not None
    }
    if not timings:
        raise RuntimeError(f"no runtime could run {model_path.name}: {', '.join(candidates)} all failed")
    best = GraphClassifier(model_path, min(timings, key=timings.__getitem__), device, threads)
    best.timings = timings
    logger.info(
        "runtime chosen by measurement on %s: %s (median ms per image: %s)",
        cpu_label(),
        best.runtime,
        ", ".join(f"{name} {value * 1000:.1f}" for name, value in timings.items()),
    )
    return best


def time_in_child_process(
    model_path: Path, runtime: str, device: str, threads: int | None, timeout_s: float = 300
) -> float | None:
    """`python -m tikka.model.runtime <model> <runtime> <device> <threads>`; None if it failed."""
    command = [
        sys.executable,
        "-m",
        "tikka.model.runtime",
        str(model_path),
        runtime,
        device,
        str(threads or available_cpus()),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        logger.warning("runtime %s: no timing in %d s; left out", runtime, timeout_s)
        return None
    if done.returncode != 0:
        logger.warning(
            "runtime %s failed to run %s (exit %d), left out: %s",
            runtime,
            model_path.name,
            done.returncode,
            done.stderr.strip().splitlines()[-1:] or "no message",
        )
        return None
    return float(done.stdout.split()[-1])


def seconds_per_image(classifier: _Classifier, runs: int = 5, budget_s: float = 3.0) -> float:
    """Median of up to ``runs`` timed calls on one image (at least 2; fewer past ``budget_s``)."""
    spec = classifier.input_spec
    image = np.random.default_rng(0).integers(0, 256, (1, spec.height, spec.width, 3), dtype=np.uint8)
    classifier.predict_proba(image)  # lazy initialisation is not speed
    seconds: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(seconds) < runs and (len(seconds) < 2 or time.perf_counter() < deadline):
        started = time.perf_counter()
        classifier.predict_proba(image)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


class _Classifier:
    """What both runtimes share: the checkpoint's config, labels and input geometry."""

    runtime: str
    timings: dict[str, float] | None = None  # each candidate's seconds per image, where measured

    def __init__(self, model_path: Path):
        self.model_path = model_path
        checkpoint = Checkpoint.read(model_path)
        self.config = checkpoint.config
        self.labels = checkpoint.labels
        self.input_spec = checkpoint.input_spec
        self.explain_method = checkpoint.explain_method

    def warm_up(self) -> None:
        """One real inference, so the first request does not pay for lazy initialisation."""
        spec = self.input_spec
        self.predict_proba(np.zeros((1, spec.height, spec.width, 3), dtype=np.uint8))

    def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class GraphClassifier(_Classifier):
    """The exported graph on OpenVINO or ONNX Runtime: ``runtime`` is ``openvino`` or
    ``onnxruntime`` (fp32), or ``openvino-bf16`` or ``openvino-int8``.

    Both runtimes read the same ``model.onnx`` (the int8 graph is its quantized copy); which
    is faster depends on the CPU and the model, so it is measured (``fastest_graph_runtime``).
    """

    def __init__(self, model_path: Path, runtime: str = "openvino", device: str = "auto", threads: int | None = None):
        super().__init__(model_path)
        self.runtime = runtime
        self.device_preference, self.threads = device, threads
        self._torch: TorchClassifier | None = None
        self._torch_lock = threading.Lock()
        threads = threads or available_cpus()
        engine, _, precision = runtime.partition("-")
        if engine == "openvino" and precision in ("", *REDUCED_PRECISIONS):
            graph = model_path / (INT8_FILE if precision == "int8" else ONNX_FILE)
            self._run, self.outputs, self.device = _openvino(
                graph, device, threads, "bf16" if precision == "bf16" else "f32"
            )
        elif runtime == "onnxruntime":
            self._run, self.outputs, self.device = _onnxruntime(model_path / ONNX_FILE, device, threads)
        else:
            raise ValueError(f"no graph runtime {runtime!r}: {', '.join(GRAPH_RUNTIMES)}, openvino-bf16, openvino-int8")
        logger.info(
            "loaded %s (%d classes) on %s, %s, %d inference threads",
            model_path.name,
            len(self.labels),
            runtime,
            self.device,
            threads,
        )

    def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, num_classes) softmax probabilities."""
        (logits,) = self._run(["logits"], np.ascontiguousarray(pixels, dtype=np.uint8))
        return softmax(logits.astype(np.float32))

    def predict_with_maps(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and the graph's explanation maps (None where it has none), for a batch."""
        if "explanation" not in self.outputs:
            return self.predict_proba(pixels), None
        logits, relevance = self._run(["logits", "explanation"], np.ascontiguousarray(pixels, dtype=np.uint8))
        return softmax(logits.astype(np.float32)), relevance.astype(np.float32)

    def explain(self, pixels: np.ndarray) -> Explanation | None:
        """The graph's own explanation of one image; torch's where the graph has none."""
        if "explanation" not in self.outputs:
            return self._torch_classifier().explain(pixels) if self.explain_method else None
        probabilities, maps = self.predict_with_maps(pixels)
        layers, heads = attention_shape(self.config) if self.explain_method == "attention-rollout" else (1, 0)
        return Explanation.of(probabilities[0], maps[0], self.explain_method, layers, heads)

    def _torch_classifier(self) -> TorchClassifier:
        """Grad-CAM needs gradients, which the graph lacks for heads that are not pool + linear."""
        with self._torch_lock:
            if self._torch is None:
                logger.info("%s: its graph has no explanation output; explaining with torch", self.model_path.name)
                self._torch = TorchClassifier(self.model_path, self.device_preference, self.threads)
            return self._torch


def _onnxruntime(path: Path, device: str, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning threads burn the cores that the gateway's decoding needs between
    # batches: with spinning on, the two fought and the pipeline ran at half speed.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = onnxruntime.InferenceSession(str(path), options, providers=providers)

    def run(names: list[str], pixels: np.ndarray) -> list[np.ndarray]:
        return session.run(names, {"pixels": pixels})

    return run, [output.name for output in session.get_outputs()], session.get_providers()[0]


def _openvino(path: Path, device: str, threads: int, precision: str = "f32"):
    import openvino

    core = openvino.Core()
    target = "GPU" if device in ("auto", "cuda") and "GPU" in core.available_devices else "CPU"
    # The precision explicitly: on CPUs with bf16 units OpenVINO would otherwise pick bf16,
    # which moved probabilities by up to 0.03; bf16 serves only once it passed its gate.
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if target == "CPU":
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(str(path), target, config)
    # An infer request is not thread-safe: one per thread (classify and explain run concurrently).
    local = threading.local()

    def run(names: list[str], pixels: np.ndarray) -> list[np.ndarray]:
        if not hasattr(local, "request"):
            local.request = compiled.create_infer_request()
        results = local.request.infer({"pixels": pixels})
        return [results[compiled.output(name)] for name in names]

    return run, [name for output in compiled.outputs for name in output.get_names()], target


def normalisation(spec: InputSpec):
    """(scale, offset) with ``pixels * scale + offset`` = the processor's rescale + normalise."""
    import torch

    std = torch.tensor(spec.std, dtype=torch.float32).reshape(1, 3, 1, 1)
    mean = torch.tensor(spec.mean, dtype=torch.float32).reshape(1, 3, 1, 1)
    return spec.rescale / std, -mean / std


class TorchClassifier(_Classifier):
    """An ``AutoModelForImageClassification`` checkpoint on torch, loaded once, frozen."""

    runtime = "torch"

    def __init__(self, model_path: Path, device: str = "auto", threads: int | None = None):
        import torch
        from transformers import AutoModelForImageClassification

        super().__init__(model_path)
        if threads:
            torch.set_num_threads(threads)
        self.device = select_device(device)
        self.model = AutoModelForImageClassification.from_pretrained(str(model_path))
        self.model.eval().requires_grad_(False).to(self.device)
        self.scale, self.offset = (t.to(self.device) for t in normalisation(self.input_spec))
        self.explain_model = self._load_explain_model(model_path)
        logger.info("loaded %s (%d classes) on torch, %s", type(self.model).__name__, len(self.labels), self.device)

    def _load_explain_model(self, model_path: Path):
        """The model explanations run on.

        Only eager attention returns attention weights, and switching the shared
        model's implementation per request would race with /predict. So
        transformers get a second, eager copy, set once at load (memory: one
        more copy of the weights); Grad-CAM needs no attentions and shares the model.
        """
        from transformers import AutoModelForImageClassification

        if self.explain_method != "attention-rollout":
            return self.model
        eager = AutoModelForImageClassification.from_pretrained(str(model_path), attn_implementation="eager")
        return eager.eval().requires_grad_(False).to(self.device)

    def normalise(self, pixels: np.ndarray):
        """uint8 (N, H, W, 3) -> the processor's float (N, 3, H, W), on the device."""
        import torch

        batch = torch.from_numpy(np.require(pixels, np.uint8, ["C", "W"])).to(self.device)
        return batch.permute(0, 3, 1, 2).float() * self.scale + self.offset

    def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, num_classes) softmax probabilities."""
        import torch

        with torch.inference_mode():
            logits = self.model(pixel_values=self.normalise(pixels)).logits
            return logits.float().softmax(dim=-1).cpu().numpy()

    def explain(self, pixels: np.ndarray) -> Explanation | None:
        from tikka.model.explain import explain

        if self.explain_method is None:
            return None
        return explain(self.explain_model, self.normalise(pixels))


def top_k_labels(probabilities: np.ndarray, labels: list[str], k: int) -> dict[str, float]:
    """The k most probable labels, highest first, probabilities rounded to 3 decimals."""
    k = min(k, len(labels))
    order = np.argsort(-probabilities, kind="stable")[:k]
    return {labels[i]: round(float(probabilities[i]), 3) for i in order}


if __name__ == "__main__":  # time_in_child_process: prints one runtime's seconds per image
    model, runtime, device, threads = sys.argv[1:5]
    print(seconds_per_image(GraphClassifier(Path(model), runtime, device, int(threads))))
