"""The gateway and the classifier served apart, as docker/k8s deploys them.

Two processes on two ports, wired only by configuration: the classifier alone
(`start-http-server --service-name classifier`) and the gateway with BentoML's
runner map pointing at it (BENTOML_SERVE_DEPENDS). The arguments and the variable
are read from the Kubernetes manifests, so the test serves what they deploy.
"""

from __future__ import annotations

import contextlib
import pathlib
import pickle
import time

import httpx
import pytest

from tests import helpers

pytestmark = [pytest.mark.slow, pytest.mark.served]


class TouchOnUnpickle:
    """A payload that runs code when unpickled: it creates a file."""

    def __init__(self, path: pathlib.Path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (self.path,)


def secret_env(spec: dict) -> list[str]:
    """The variables a container takes from the Secret, one by one."""
    return [e["name"] for e in spec["env"] if "secretKeyRef" in e.get("valueFrom", {})]


def test_the_classifier_answers_only_the_gateway(default_model, tmp_path):
    """Its port unpickles what it is sent, so nobody else's payload may get that far."""
    from tikka.model.checkpoint import Checkpoint

    spec = Checkpoint.read(default_model.path).input_spec
    classifier_spec = helpers.k8s_container("classifier")
    assert secret_env(classifier_spec) == ["TIKKA_INTERNAL_TOKEN"]
    token = "a-shared-token-for-this-test"
    pwned = tmp_path / "pwned"
    pickled = pickle.dumps(TouchOnUnpickle(pwned))
    as_json = {"pixels": [[[[0, 0, 0]] * spec.width] * spec.height]}
    with helpers.served_bento(
        tmp_path / "classifier",
        env={"TIKKA_INTERNAL_TOKEN": token},
        command=helpers.start_command(classifier_spec["args"]),
    ) as url:
        attempts = {
            "pickle, no token": {"content": pickled, "headers": {"content-type": "application/vnd.bentoml+pickle"}},
            "pickle, wrong token": {
                "content": pickled,
                "headers": {"content-type": "application/vnd.bentoml+pickle", "authorization": "Bearer guess"},
            },
            "json, no token": {"json": as_json},
            "json, a token prefix": {"json": as_json, "headers": {"authorization": f"Bearer {token[:-1]}"}},
            "json, an API-key header": {"json": as_json, "headers": {"x-api-key": token}},
        }
        for name, request in attempts.items():
            for route in ("/classify", "/explain"):
                response = httpx.post(f"{url}{route}", timeout=30, **request)
                assert response.status_code == 401, (name, route, response.text)
                assert response.json()["error"] == "not_the_gateway", (name, route)
        assert not pwned.exists(), "a pickle from an outsider was unpickled"
        for path in ("/docs.json", "/schema.json"):
            assert httpx.get(f"{url}{path}", timeout=10).status_code == 401, path
        for path in ("/livez", "/readyz", "/metrics"):  # the orchestrator's and Prometheus's
            assert httpx.get(f"{url}{path}", timeout=10).status_code == 200, path

        # The control: with the token the same port does unpickle (the door is what held above).
        authorised = httpx.post(
            f"{url}/classify",
            content=pickled,
            timeout=30,
            headers={"content-type": "application/vnd.bentoml+pickle", "authorization": f"Bearer {token}"},
        )
        assert pwned.exists(), authorised.text
        classified = httpx.post(
            f"{url}/classify", json=as_json, timeout=30, headers={"authorization": f"Bearer {token}"}
        )
        assert classified.status_code == 200, classified.text
        assert len(classified.json()[0]) == len(Checkpoint.read(default_model.path).labels)


def test_gateway_and_classifier_apart_then_the_classifier_stops(default_model, tmp_path, photo):
    classifier_spec, gateway_spec = helpers.k8s_container("classifier"), helpers.k8s_container("gateway")
    gateway_env = {e["name"]: e["value"] for e in gateway_spec["env"] if "value" in e}
    gateway_env.pop("BENTOML_HOME")  # served_bento gives each process its own
    dependency, _, _ = gateway_env["BENTOML_SERVE_DEPENDS"].partition("=")
    assert {e["secretRef"]["name"] for e in gateway_spec["envFrom"] if "secretRef" in e} == {"tikka-secrets"}
    image = {"image": ("pizza.jpg", photo("pizza.jpg"), "image/jpeg")}
    token = {"TIKKA_INTERNAL_TOKEN": "the-same-on-both"}

    with contextlib.ExitStack() as classifier_process:
        classifier_url = classifier_process.enter_context(
            helpers.served_bento(
                tmp_path / "classifier", env=token, command=helpers.start_command(classifier_spec["args"])
            )
        )
        with helpers.served_bento(
            tmp_path / "impostor",
            env={"BENTOML_SERVE_DEPENDS": f"{dependency}={classifier_url}", "TIKKA_INTERNAL_TOKEN": "another"},
            command=helpers.start_command(gateway_spec["args"]),
        ) as impostor_url:
            refused = httpx.post(f"{impostor_url}/predict", files=image, timeout=60)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "classifier_unavailable"
            assert "TIKKA_INTERNAL_TOKEN" in refused.json()["detail"]
        with helpers.served_bento(
            tmp_path / "gateway",
            env={**gateway_env, "BENTOML_SERVE_DEPENDS": f"{dependency}={classifier_url}", **token},
            command=helpers.start_command(gateway_spec["args"]),
        ) as gateway_url:
            predicted = httpx.post(f"{gateway_url}/predict", files=image, timeout=60)
            assert predicted.status_code == 200, predicted.text
            predictions = predicted.json()["predictions"]
            assert max(predictions, key=predictions.get) == "pizza"
            explained = httpx.post(f"{gateway_url}/predict/explain", files=image, timeout=60)
            assert explained.status_code == 200 and explained.json()["predicted_class"] == "pizza"

            # The model ran in the other process: its metrics count the batch, the gateway's do not.
            classifier_metrics = httpx.get(f"{classifier_url}/metrics").text
            assert helpers.metric_value(classifier_metrics, "tikka_inference_seconds_count", method="classify") >= 1
            gateway_metrics = httpx.get(f"{gateway_url}/metrics").text
            assert 'tikka_inference_seconds_count{method="classify"}' not in gateway_metrics

            classifier_process.close()  # the classifier's pods are gone

            started = time.monotonic()
            refused = httpx.post(f"{gateway_url}/predict", files=image, timeout=30)
            elapsed = time.monotonic() - started
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "classifier_unavailable"
            assert refused.headers["retry-after"] == "5"
            assert elapsed < 5, f"answered in {elapsed:.1f} s: no hang"
            explain_refused = httpx.post(f"{gateway_url}/predict/explain", files=image, timeout=30)
            assert explain_refused.status_code == 503
            assert explain_refused.json()["error"] == "classifier_unavailable"

            # Still ready and alive: the gateway stays in its Service (no HTML 503 from the
            # ingress in its place) and answers the JSON 503 above; no restart loop.
            assert httpx.get(f"{gateway_url}/readyz", timeout=10).status_code == 200
            assert httpx.get(f"{gateway_url}/livez", timeout=10).status_code == 200
            assert httpx.get(f"{gateway_url}/health", timeout=10).status_code == 200
