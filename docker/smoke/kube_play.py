"""`make test-images`: the Kubernetes split executed, not only validated. `podman kube play`
runs the gateway and classifier Deployments as `kubectl kustomize docker/k8s` renders them:
their arguments, environment (the generated ConfigMap and Secret), security context and
probes. Then a photo goes through the gateway to the classifier, and the access rules hold.

What podman needs changed in its copy, and nothing else: the image (the one just built),
a host port per container port (podman 4.3 publishes every containerPort on the host, so
two pods on port 3000 collide), the Secret as a podman secret (its `data` map, which is
what podman 4.3 reads), and `hostAliases` naming the classifier pod `tikka-classifier`,
in place of the Service's DNS name. Services, NetworkPolicies and HPAs are the cluster's.
The probes are asked here as the kubelet asks them (an HTTP GET on the container port):
podman 4.3 turns a liveness probe into a `curl` health check, with a named port as port 0,
and the image has no curl, so its own health checks prove nothing about the manifests.

    python docker/smoke/kube_play.py localhost/tikka-backend:<tag>
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "tests" / "data" / "pizza.jpg"
NETWORK = "tikka-kube-play"
results: list[bool] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'}  {name}  {detail}", flush=True)


def podman(*args: str, check: bool = True) -> str:
    return subprocess.run(["podman", *args], check=check, capture_output=True, text=True).stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def render(folder: Path, keys: dict[str, str]) -> list[dict]:
    """The kustomization rendered with these keys as its secrets.env."""
    shutil.copytree(ROOT / "docker" / "k8s", folder, ignore=shutil.ignore_patterns("secrets.env"))
    (folder / "secrets.env").write_text("".join(f"{key}={value}\n" for key, value in keys.items()))
    rendered = subprocess.run(["kubectl", "kustomize", str(folder)], check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def one(documents: list[dict], kind: str, name: str) -> dict:
    """The document of this kind named ``name``, or ``name-<hash>`` as kustomize names what it generates."""
    (found,) = [
        doc
        for doc in documents
        if doc["kind"] == kind and re.fullmatch(rf"{name}(-[a-z0-9]{{10}})?", doc["metadata"]["name"])
    ]
    return found


def for_podman(deployment: dict, image: str, host_aliases: list[dict] | None = None) -> tuple[dict, dict[int, int]]:
    """The podman copy of a Deployment, and its container ports -> host ports."""
    pod = deployment["spec"]["template"]["spec"]
    ports = {}
    for container in pod["containers"]:
        container["image"] = image
        for port in container.get("ports", []):
            port["hostPort"] = ports[port["containerPort"]] = free_port()
    if host_aliases:
        pod["hostAliases"] = host_aliases
    return deployment, ports


def play(documents: list[dict], folder: Path, name: str) -> None:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    subprocess.run(["podman", "kube", "play", "--network", NETWORK, str(path)], check=True, stdout=subprocess.DEVNULL)


def wait_ready(url: str, container: str, timeout: float = 240) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if httpx.get(f"{url}/readyz", timeout=3).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(1)
    print(podman("logs", "--tail", "40", container, check=False))
    raise SystemExit(f"{container} not ready in {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image")
    image = parser.parse_args().image
    api_key, token = secrets.token_hex(16), secrets.token_hex(32)
    keys = {
        "TIKKA_API_KEYS": json.dumps([api_key]),
        "TIKKA_METRICS_KEYS": "[]",
        "TIKKA_API_KEY": api_key,
        "TIKKA_INTERNAL_TOKEN": token,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        found = render(folder / "k8s", keys)
        config, secret = one(found, "ConfigMap", "tikka-config"), one(found, "Secret", "tikka-secrets")
        podman("network", "create", NETWORK, check=False)
        podman("secret", "rm", secret["metadata"]["name"], check=False)
        (folder / "secret.json").write_text(json.dumps(secret["data"]))
        podman("secret", "create", secret["metadata"]["name"], str(folder / "secret.json"))
        pods = []
        try:
            classifier, classifier_ports = for_podman(one(found, "Deployment", "tikka-classifier"), image)
            play([config, classifier], folder, "classifier")
            pods.append(folder / "classifier.yaml")
            classifier_url = f"http://127.0.0.1:{classifier_ports[3000]}"
            ready_s = wait_ready(classifier_url, "tikka-classifier-pod-0-classifier")
            check("classifier: /readyz through its published port", True, f"after {ready_s:.0f} s")
            address = json.loads(podman("pod", "inspect", "tikka-classifier-pod-0"))
            infra = address["InfraContainerID"] if isinstance(address, dict) else address[0]["InfraContainerID"]
            ip = json.loads(podman("inspect", infra))[0]["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
            gateway, gateway_ports = for_podman(
                one(found, "Deployment", "tikka-gateway"), image, [{"ip": ip, "hostnames": ["tikka-classifier"]}]
            )
            play([config, gateway], folder, "gateway")
            pods.append(folder / "gateway.yaml")
            gateway_url = f"http://127.0.0.1:{gateway_ports[3000]}"
            wait_ready(gateway_url, "tikka-gateway-pod-0-gateway")

            for role, spec in (("classifier", classifier), ("gateway", gateway)):
                container = spec["spec"]["template"]["spec"]["containers"][0]
                (inspected,) = json.loads(podman("inspect", f"tikka-{role}-pod-0-{role}"))
                host = inspected["HostConfig"]
                run_as = spec["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
                check(
                    f"{role}: runs as the manifest says (args, user, read-only root, no capabilities)",
                    inspected["Config"]["Cmd"][-len(container["args"]) :] == container["args"]
                    and inspected["Config"]["User"].split(":")[0] == str(run_as)
                    and host["ReadonlyRootfs"] is True
                    and not inspected["EffectiveCaps"],
                    f"cmd {inspected['Config']['Cmd']}, user {inspected['Config']['User']},"
                    f" read-only {host['ReadonlyRootfs']}, caps {inspected['EffectiveCaps']}",
                )
                limits = container["resources"]["limits"]
                memory = int(limits["memory"].removesuffix("Gi")) * 2**30 if limits["memory"].endswith("Gi") else None
                check(
                    f"{role}: the memory and CPU limits",
                    host["Memory"] == memory and host["NanoCpus"] == int(float(limits["cpu"]) * 1e9),
                    f"memory {host['Memory']}, {host['NanoCpus'] / 1e9:g} CPUs; the manifest: {limits}",
                )
                url = classifier_url if role == "classifier" else gateway_url
                probes = {
                    kind: container[kind]["httpGet"]["path"]
                    for kind in ("startupProbe", "readinessProbe", "livenessProbe")
                }
                answers = {kind: httpx.get(f"{url}{path}", timeout=5).status_code for kind, path in probes.items()}
                check(
                    f"{role}: each probe's path answers 200, as the kubelet asks it",
                    set(answers.values()) == {200},
                    json.dumps(answers),
                )

            photo = {"image": ("pizza.jpg", PHOTO.read_bytes(), "image/jpeg")}
            r = httpx.post(
                f"{gateway_url}/predict", files=photo, headers={"Authorization": f"Bearer {api_key}"}, timeout=60
            )
            check(
                "gateway -> classifier: /predict with the Secret's API key",
                r.status_code == 200 and len(r.json().get("predictions", {})) == 5,
                f"{r.status_code} {r.text[:100]}",
            )
            r = httpx.post(f"{gateway_url}/predict", files=photo, timeout=60)
            check(
                "gateway: no key is a 401 (keys from the Secret, TIKKA_REQUIRE_AUTH from the ConfigMap)",
                r.status_code == 401 and r.json().get("error") == "unauthorized",
                f"{r.status_code}",
            )
            r = httpx.post(f"{classifier_url}/classify", json={"pixels": []}, timeout=30)
            check(
                "classifier: a caller without the internal token is refused",
                r.status_code == 401 and r.json().get("error") == "not_the_gateway",
                f"{r.status_code}",
            )
        finally:
            for path in reversed(pods):
                subprocess.run(["podman", "kube", "down", str(path)], capture_output=True)
            podman("secret", "rm", secret["metadata"]["name"], check=False)
            podman("network", "rm", NETWORK, check=False)
    print(f"{sum(results)}/{len(results)} kube play checks passed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
