"""docker/k8s: every manifest valid against the Kubernetes JSON schemas (kubernetes-validate,
no cluster), as written and as `kubectl kustomize` renders it, plus the properties the
deployment depends on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import helpers

K8S = helpers.ROOT / "docker" / "k8s"
KUBERNETES_VERSION = "1.32.0"


def documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def manifests() -> dict[tuple[str, str], dict]:
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in documents(path.read_text()):
                found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def validate(paths: list[Path]) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).with_name("kubernetes-validate")
    return subprocess.run([str(tool), "--strict", "-k", KUBERNETES_VERSION, *map(str, paths)],
                          capture_output=True, text=True)


def test_every_manifest_is_valid_as_written():
    files = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    result = validate(files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(manifests())


def test_kustomization_lists_every_file_and_renders_valid_manifests(tmp_path):
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl renders the kustomization: `make test` installs it (apt)"
    rendered = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=True).stdout
    docs = documents(rendered)
    assert len(docs) == len(manifests())
    assert all(d["metadata"].get("namespace") == "tikka" for d in docs if d["kind"] != "Namespace")
    (tmp_path / "rendered.yaml").write_text(rendered)
    result = validate([tmp_path / "rendered.yaml"])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["tikka-gateway", "tikka-classifier"])
def test_gateway_and_classifier_are_separate_deployments_with_probes_limits_and_budgets(name):
    found = manifests()
    deployment = found[("Deployment", name)]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 60
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and container["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert found[("HorizontalPodAutoscaler", name)]["spec"]["scaleTargetRef"]["name"] == name
    assert ("PodDisruptionBudget", name) in found and ("Service", name) in found


def test_gateway_reaches_the_classifier_through_its_service():
    found = manifests()
    gateway = found[("Deployment", "tikka-gateway")]["spec"]["template"]["spec"]["containers"][0]
    depends = {e["name"]: e["value"] for e in gateway["env"]}["BENTOML_SERVE_DEPENDS"]
    service = found[("Service", "tikka-classifier")]
    assert depends == f"classifier=http://tikka-classifier:{service['spec']['ports'][0]['port']}"
    classifier = found[("Deployment", "tikka-classifier")]["spec"]["template"]["spec"]["containers"][0]
    assert classifier["args"][:3] == ["start-http-server", "--service-name", "classifier"]


def test_ollama_is_a_stateful_set_with_a_volume_and_a_pull_job():
    found = manifests()
    ollama = found[("StatefulSet", "ollama")]
    assert ollama["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "models"
    assert found[("Job", "ollama-pull-gemma3")]["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "ollama", "pull", "gemma3:270m"]


def test_ingress_routes_like_nginx():
    ingress = manifests()[("Ingress", "tikka")]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "10m"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    backends = {r["host"]: r["http"]["paths"][0]["backend"]["service"]["name"] for r in ingress["spec"]["rules"]}
    assert backends == {"api.tikka.example.com": "tikka-gateway", "tikka.example.com": "tikka-frontend"}
