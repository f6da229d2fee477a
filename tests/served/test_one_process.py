"""TIKKA_ONE_PROCESS: the classifier in the gateway's own process, for one small VM.

`bentoml serve` starts a worker for every declared dependency; with the setting the
gateway declares none and builds the classifier itself, so one worker answers
everything, with the same answers and the same runtime choice.
"""

from __future__ import annotations

import httpx
import psutil
import pytest

from tests import helpers

pytestmark = [pytest.mark.slow, pytest.mark.served]


def workers(url: str) -> list[str]:
    """The command lines of the `bentoml serve` supervisor's worker processes."""
    supervisor = psutil.Process(helpers.SERVED[url].pid)
    return [
        " ".join(child.cmdline())
        for child in supervisor.children(recursive=True)
        if "_bentoml_impl.worker" in " ".join(child.cmdline())
    ]


def test_one_worker_serves_predictions_and_explanations(default_model, bento, tmp_path, photo):
    assert sum("--service-name classifier" in command for command in workers(bento)) == 1, "the split by default"
    image = {"image": ("pizza.jpg", photo("pizza.jpg"), "image/jpeg")}
    # The split's measured choice, pinned here: two start-ups timed under load may pick
    # different precisions (an AVX2-only CI machine did), whose top-5 tails (~0) differ.
    split_choice = httpx.get(f"{bento}/").json()["runtime"]["runtime"]  # e.g. openvino-int8
    runtime, _, precision = split_choice.partition("-")
    pinned = {"TIKKA_ONE_PROCESS": "true", "TIKKA_RUNTIME": runtime, "TIKKA_PRECISION": precision or "fp32"}
    with helpers.served_bento(tmp_path / "one", pinned) as url:
        commands = workers(url)
        assert len(commands) == 1 and "--service-name tikka" in commands[0], commands

        predicted = httpx.post(f"{url}/predict", files=image, timeout=60)
        assert predicted.status_code == 200, predicted.text
        split = httpx.post(f"{bento}/predict", files=image, timeout=60).json()
        assert predicted.json()["predictions"] == pytest.approx(split["predictions"], abs=2e-3)

        explained = httpx.post(f"{url}/predict/explain", files=image, timeout=60)
        assert explained.status_code == 200, explained.text[:200]
        assert explained.json()["predicted_class"] == "pizza" and explained.json()["attention_map"]
        rejected = httpx.post(f"{url}/predict", files={"image": ("x.jpg", b"nope", "image/jpeg")}, timeout=60)
        assert rejected.status_code == 400 and rejected.json()["detail"], rejected.text

        runtime = httpx.get(f"{url}/").json()["runtime"]
        assert runtime["runtime"] == split_choice and runtime["chosen"] == "configured", runtime
        metrics = httpx.get(f"{url}/metrics").text
        assert helpers.metric_value(metrics, "tikka_runtime_info", runtime=runtime["runtime"]) == 1
