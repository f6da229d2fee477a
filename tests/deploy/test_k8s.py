"""docker/k8s: every manifest valid against the Kubernetes JSON schemas (kubernetes-validate,
no cluster), as written and as `kubectl kustomize` renders it, plus the properties the
deployment depends on."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import helpers
from tikka.settings import Settings

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
    return subprocess.run(
        [str(tool), "--strict", "-k", KUBERNETES_VERSION, *map(str, paths)], capture_output=True, text=True
    )


def test_every_manifest_is_valid_as_written():
    files = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    result = validate(files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(manifests())


def render(tmp_path: Path, secrets: dict[str, str]) -> list[dict]:
    """`kubectl kustomize` of a copy of docker/k8s with ``secrets`` as its secrets.env (the
    file git ignores and each site writes)."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl renders the kustomization: `make test` installs it (apt)"
    folder = tmp_path / "k8s"
    shutil.copytree(K8S, folder, ignore=shutil.ignore_patterns("secrets.env"))
    (folder / "secrets.env").write_text("".join(f"{key}={value}\n" for key, value in secrets.items()))
    rendered = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=True).stdout
    (tmp_path / "rendered.yaml").write_text(rendered)
    return documents(rendered)


def example_secrets() -> dict[str, str]:
    lines = (K8S / "secrets.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_kustomization_lists_every_file_and_renders_valid_manifests(tmp_path):
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    docs = render(tmp_path, example_secrets())
    assert len(docs) == len(manifests()) + 2, "the manifests, the generated ConfigMap and Secret"
    assert all(d["metadata"].get("namespace") == "tikka" for d in docs if d["kind"] != "Namespace")
    result = validate([tmp_path / "rendered.yaml"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_keys_come_only_from_the_ignored_secrets_env(tmp_path):
    """A committed Secret (placeholders) was overwritten the real keys at every `kubectl apply -k`."""
    assert not [key for key in manifests() if key[0] == "Secret"], "no Secret is committed"
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/k8s/secrets.env"], cwd=helpers.ROOT)
    assert ignored.returncode == 0, "git ignores docker/k8s/secrets.env"
    assert set(example_secrets().values()) == {"", "[]"}, "the committed example holds no key"
    site_keys = {name: f"{name.lower()}-{os.urandom(8).hex()}" for name in example_secrets()}
    docs = render(tmp_path, site_keys)
    (secret,) = [doc for doc in docs if doc["kind"] == "Secret"]
    decoded = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert decoded == site_keys, "the Secret is the site's file, nothing else"
    # Every reference follows the generated (content-hashed) name, so a new key rolls the pods.
    referenced = re.findall(r"name: (tikka-secrets[\w-]*)", (tmp_path / "rendered.yaml").read_text())
    assert set(referenced) == {secret["metadata"]["name"]} and secret["metadata"]["name"] != "tikka-secrets"
    (config,) = [
        doc for doc in docs if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("tikka-config")
    ]
    assert config["data"]["TIKKA_REQUIRE_AUTH"] == "true"
    # The settings' name follows their content too: a change rolls the pods that read them.
    configs = re.findall(r"name: (tikka-config[\w-]*)", (tmp_path / "rendered.yaml").read_text())
    assert set(configs) == {config["metadata"]["name"]} and config["metadata"]["name"] != "tikka-config"


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
    # A scale-in or rollout: out of the endpoints first (preStop), then the calls in flight finish.
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= int(container["lifecycle"]["preStop"]["exec"]["command"][1]) + 60
    # minAvailable: 1 with one replica (minReplicas) blocks node drains.
    assert found[("PodDisruptionBudget", name)]["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
    }


def test_gateway_reaches_the_classifier_through_its_service():
    found = manifests()
    gateway = found[("Deployment", "tikka-gateway")]["spec"]["template"]["spec"]["containers"][0]
    depends = {e["name"]: e["value"] for e in gateway["env"]}["BENTOML_SERVE_DEPENDS"]
    service = found[("Service", "tikka-classifier")]
    assert depends == f"classifier=http://tikka-classifier:{service['spec']['ports'][0]['port']}"
    classifier = found[("Deployment", "tikka-classifier")]["spec"]["template"]["spec"]["containers"][0]
    assert classifier["args"][:3] == ["start-http-server", "--service-name", "classifier"]


def test_ollama_pulls_its_model_into_each_replicas_volume_before_serving():
    """Not a Job through the Service (one replica got the model; the Job raced the StatefulSet)."""
    found = manifests()
    ollama = found[("StatefulSet", "ollama")]["spec"]
    assert ollama["volumeClaimTemplates"][0]["metadata"]["name"] == "models"
    (init,) = ollama["template"]["spec"]["initContainers"]
    assert "ollama pull gemma3:270m" in init["args"][0] and init["env"] == [
        {"name": "OLLAMA_HOST", "value": "127.0.0.1:11434"}
    ]
    serving = ollama["template"]["spec"]["containers"][0]
    assert init["volumeMounts"] == serving["volumeMounts"] == [{"name": "models", "mountPath": "/root/.ollama"}]
    assert init["image"] == serving["image"]
    assert not [key for key in found if key[0] == "Job"]


def test_ingress_routes_like_nginx_one_host_each_with_its_own_timeouts():
    """ingress-nginx applies an Ingress's annotations to all its hosts: the API's and the app's differ."""
    found = manifests()
    api, app = found[("Ingress", "tikka-api")], found[("Ingress", "tikka-app")]
    for ingress, host, service in (
        (api, "api.tikka.example.com", "tikka-gateway"),
        (app, "tikka.example.com", "tikka-frontend"),
    ):
        (rule,) = ingress["spec"]["rules"]
        assert (rule["host"], rule["http"]["paths"][0]["backend"]["service"]["name"]) == (host, service)
        assert ingress["spec"]["tls"][0]["hosts"] == [host]
    api_notes, app_notes = api["metadata"]["annotations"], app["metadata"]["annotations"]
    assert api_notes["nginx.ingress.kubernetes.io/proxy-body-size"] == "10m"
    bulk = found[("Ingress", "tikka-api-bulk")]
    assert bulk["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "64m"
    assert {p["path"] for p in bulk["spec"]["rules"][0]["http"]["paths"]} == {"/bulk_classify", "/v1/bulk_classify"}
    assert Settings.model_fields["bulk_archive_bytes"].default == 64 * 1024 * 1024
    assert api_notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    # Streamlit's WebSocket held an hour, as docker/nginx/tikka.conf holds it (proxy_read_timeout 1h).
    assert app_notes["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert "nginx.ingress.kubernetes.io/proxy-buffering" not in app_notes
    assert "proxy_read_timeout 1h;" in (helpers.ROOT / "docker" / "nginx" / "tikka.conf").read_text()


def test_network_policies_let_only_the_gateway_reach_the_classifier_and_ollama():
    found = manifests()
    policies = {name: doc["spec"] for (kind, name), doc in found.items() if kind == "NetworkPolicy"}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}

    def sources(name: str) -> list[dict]:
        (rule,) = policies[name]["ingress"]
        return rule["from"]

    def port_of(kind: str, name: str) -> int:
        pod = found[(kind, name)]["spec"]["template"]["spec"]["containers"][0]
        return pod["ports"][0]["containerPort"]

    gateway_pods = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "tikka-gateway"}}}
    for name, kind in (("tikka-classifier", "Deployment"), ("ollama", "StatefulSet")):
        assert gateway_pods in sources(name)
        assert not [s for s in sources(name) if "podSelector" in s and s != gateway_pods], name
        assert policies[name]["ingress"][0]["ports"] == [{"port": port_of(kind, name)}]
        labels = found[(kind, name)]["spec"]["template"]["metadata"]["labels"]
        assert policies[name]["podSelector"]["matchLabels"].items() <= labels.items()
    ingress_controller = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    assert ingress_controller in sources("tikka-gateway") and ingress_controller in sources("tikka-frontend")
    assert ingress_controller not in sources("tikka-classifier") + sources("ollama")


def test_the_classifier_scales_on_the_series_prometheus_adapter_serves():
    """The HPA's metric is the adapter rule's name, from a series the classifier pods are
    scraped for (tests/served/test_scale_out.py reads the series from served classifiers)."""
    found = manifests()
    values = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    series = rule["seriesQuery"].partition("{")[0]
    assert rule["metricsQuery"].startswith(f"sum({series}{{") and 'endpoint="/classify"' in rule["metricsQuery"]
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    hpa = found[("HorizontalPodAutoscaler", "tikka-classifier")]["spec"]
    pods_metrics = [m["pods"] for m in hpa["metrics"] if m["type"] == "Pods"]
    assert [m["metric"]["name"] for m in pods_metrics] == [rule["name"]["as"]]
    assert {m["type"] for m in hpa["metrics"]} == {"Pods", "Resource"}, "CPU stays as the second signal"
    template = found[("Deployment", "tikka-classifier")]["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == template["spec"]["containers"][0]["ports"][0]["containerPort"]


def quantity(value: str) -> float:
    """A Kubernetes quantity in bytes (memory) or cores (CPU)."""
    units = {"Mi": 2**20, "Gi": 2**30, "m": 1e-3}
    number, unit = re.fullmatch(r"([\d.]+)(Mi|Gi|m)?", str(value)).groups()
    return float(number) * units.get(unit, 1)


def test_cpu_requests_sit_near_the_limits():
    """A 500m request under a 2-CPU limit read 400% to an HPA aiming at 70%."""
    for name in ("tikka-gateway", "tikka-classifier"):
        resources = manifests()[("Deployment", name)]["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert quantity(resources["requests"]["cpu"]) >= 0.5 * quantity(resources["limits"]["cpu"]), name
