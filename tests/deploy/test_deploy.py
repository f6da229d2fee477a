"""The deployment files under docker/, checked without a container engine.

The stack itself runs in `make test-images` (podman, nginx, Prometheus: see the
docs/deploy.md); these checks pin what the old clients and the VM
depend on, lint the Dockerfiles, and hold the Grafana panels to the metrics a
served Bento really exposes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests import helpers
from tikka.settings import Settings

DOCKER = helpers.ROOT / "docker"
VM_MEMORY_MB = 8 * 1024
# The OS, Docker itself and the page cache keep at least this much of the VM.
HEADROOM_MB = 2 * 1024


def compose(name: str) -> dict:
    return yaml.safe_load((DOCKER / name).read_text())


def megabytes(limit: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([mg])", limit).groups()
    return int(number) * (1024 if unit == "g" else 1)


SLOTS = ("backend-blue", "backend-green")


def test_old_clients_reach_the_api_as_tikka_backend_8000_through_nginx():
    services = compose("docker-compose.yml")["services"]
    nginx = services["nginx"]
    # nginx holds the old name and port, and passes them to the active slot.
    assert "tikka-backend" in nginx["networks"]["default"]["aliases"]
    assert any(port.endswith(":8000:8000") for port in nginx["ports"])
    conf = (DOCKER / "nginx" / "tikka.conf").read_text()
    port_8000 = re.search(r"server \{\s*listen 8000;[^}]*\}", conf).group(0)
    assert "include /etc/nginx/conf.d/api.inc;" in port_8000
    # No keep-alive there: a deploy's reload would reset a request sent on an idle connection.
    assert "keepalive_timeout 0;" in port_8000
    assert "proxy_pass http://tikka_backend;" in (DOCKER / "nginx" / "api.inc").read_text()
    assert re.search(
        r"upstream tikka_backend \{\s*server backend-blue:8000;", (DOCKER / "nginx" / "backend.conf").read_text()
    )
    # nginx depends on nothing: Compose would recreate it with whatever it depends on.
    assert "depends_on" not in nginx


def test_keep_alive_timeouts_are_ordered_the_backend_outlasts_the_proxy():
    """A proxy that keeps an idle upstream connection longer than the backend sends the next
    request onto a connection being closed: a 502. uvicorn's default idle timeout is 5 s."""
    import uvicorn.config

    upstream = re.search(r"keepalive_timeout (\d+)s;", (DOCKER / "nginx" / "backend.conf").read_text())
    assert upstream and int(upstream.group(1)) < uvicorn.config.Config(app=None).timeout_keep_alive


def test_backend_slots_are_one_definition_behind_a_profile_each():
    services = compose("docker-compose.yml")["services"]
    blue, green = (services[name] for name in SLOTS)
    assert blue["profiles"] == ["blue"] and green["profiles"] == ["green"]
    assert {k: v for k, v in blue.items() if k != "profiles"} == {k: v for k, v in green.items() if k != "profiles"}
    env = blue["environment"]
    assert env["BENTOML_PORT"] == "8000" and env["OLLAMA_HOST"] == "http://ollama:11434"
    assert "/readyz" in " ".join(blue["healthcheck"]["test"])
    assert blue["restart"] == "unless-stopped" and blue["mem_limit"]
    # In-flight requests finish after SIGTERM: longer than the Bento's own request timeout.
    grace = int(blue["stop_grace_period"].rstrip("s"))
    assert grace > Settings.model_fields["request_timeout_s"].default
    # Ready without Ollama: the backend waits for nothing, and nothing publishes it but nginx.
    assert "depends_on" not in blue and "ports" not in blue


def test_frontend_reaches_the_backend_by_its_old_name_and_mounts_secrets_read_only():
    frontend = compose("docker-compose.yml")["services"]["frontend"]
    assert frontend["environment"]["TIKKA_API_URL"] == "http://tikka-backend:8000"
    assert any(port.endswith(":8501:8501") for port in frontend["ports"])
    assert any(v.endswith(":/app/.streamlit/secrets.toml:ro") for v in frontend["volumes"])


def test_memory_limits_fit_the_vm_with_headroom():
    services = compose("docker-compose.yml")["services"]
    limits = {name: megabytes(s["mem_limit"]) for name, s in services.items() if "mem_limit" in s}
    long_running = set(services) - {"ollama-init"}
    assert set(limits) == long_running, "every long-running service has a memory limit"
    # One slot runs; during a deploy the new one runs beside it until the switch.
    steady = sum(limits.values()) - limits["backend-green"]
    assert steady <= VM_MEMORY_MB - HEADROOM_MB, limits
    assert steady + limits["backend-green"] <= VM_MEMORY_MB - HEADROOM_MB // 4, limits


def test_offline_variant_swaps_ollama_for_the_sidecar_and_pulls_nothing():
    offline = compose("docker-compose.offline.yml")["services"]
    assert "tikka-llm-sidecar" in offline["ollama"]["image"]
    # Strings on both sides: podman-compose appends list overrides instead of replacing.
    assert "/api/version" in offline["ollama"]["healthcheck"]["test"]
    assert compose("docker-compose.yml")["services"]["ollama"]["healthcheck"]["test"] == "ollama list >/dev/null"
    assert offline["ollama-init"]["profiles"] == ["online-only"]
    production = compose("docker-compose.yml")["services"]
    assert production["ollama-init"]["entrypoint"] == ["ollama", "pull", "gemma3:270m"]


def test_local_stack_is_production_with_local_images():
    local = compose("docker-compose-local.yml")["services"]
    production = compose("docker-compose.yml")["services"]
    assert set(local) == set(production) - {"certbot"}
    for name, service in local.items():
        assert service["extends"] == {"file": "docker-compose.yml", "service": name}


def test_nginx_body_limit_matches_the_upload_limit():
    conf = (DOCKER / "nginx" / "tikka.conf").read_text() + (DOCKER / "nginx" / "api.inc").read_text()
    bulk = re.search(r"location ~ \^/\(v1/\)\?bulk_classify\(/submit\)\?\$ \{[^}]*\}", conf).group(0)
    limits = set(re.findall(r"client_max_body_size (\d+)m;", conf.replace(bulk, "")))
    default = Settings.model_fields["max_upload_bytes"].default
    assert limits == {str(default // (1024 * 1024))}
    archives = Settings.model_fields["bulk_archive_bytes"].default
    assert re.findall(r"client_max_body_size (\d+)m;", bulk) == [str(archives // (1024 * 1024))]
    backend_env = compose("docker-compose.yml")["services"]["backend-blue"]["environment"]
    assert int(backend_env["TIKKA_MAX_UPLOAD_BYTES"]) == default
    # Streams unbuffered, the app's WebSocket upgraded, ACME served, HTTP redirected.
    assert re.search(r"location ~ \^/\(v1/\)\?llm/ \{[^}]*proxy_buffering off;", conf)
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "location /.well-known/acme-challenge/" in conf and "return 301 https://" in conf
    # nginx's own answers keep the JSON error shape, and its body timeout is the Bento's.
    idle = Settings.model_fields["body_idle_timeout_s"].default
    assert re.findall(r"client_body_timeout (\d+)s;", conf) == [f"{idle:g}"]
    for status in (413, 502, 504):
        location = re.search(rf"error_page {status} = @(\w+);", conf).group(1)
        body = re.search(rf"location @{location} \{{[^}}]*return {status} '([^']+)';", conf).group(1)
        assert set(json.loads(body)) == {"error", "detail"}, status


def test_dockerfiles_pass_hadolint():
    hadolint = Path(sys.executable).with_name("hadolint")
    dockerfiles = sorted(str(p) for p in DOCKER.glob("*.Dockerfile"))
    assert len(dockerfiles) == 2
    result = subprocess.run(
        [str(hadolint), "--config", str(DOCKER / ".hadolint.yaml"), *dockerfiles], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_images_run_as_non_root():
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        users = re.findall(r"^USER (\S+)", dockerfile.read_text(), flags=re.MULTILINE)
        assert users and users[-1] not in ("root", "0"), dockerfile.name


@pytest.mark.slow
def test_every_grafana_panel_queries_metrics_the_bento_exposes(llm_bento, photo):
    """Grafana cannot run here; its queries are checked against a served Bento's /metrics
    (and run in the real Prometheus by `make test-images`)."""
    image = {"image": ("p.jpg", photo("pizza.jpg"), "image/jpeg")}
    assert httpx.post(f"{llm_bento}/predict", files=image, timeout=60).status_code == 200
    assert (
        httpx.post(
            f"{llm_bento}/llm/dish", json={"dish": "pizza", "task": "origin", "max_tokens": 4}, timeout=60
        ).status_code
        == 200
    )
    exposed = {}
    for line in httpx.get(f"{llm_bento}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            exposed.setdefault(name.split()[0], []).append(rest)

    dashboard = yaml.safe_load((DOCKER / "grafana" / "dashboards" / "tikka.json").read_text())
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert len(titles) == 7
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names = set(re.findall(r"\b((?:bentoml|tikka)_[a-z_]+)\b", target["expr"]))
            assert names, target["expr"]
            for name in names:
                assert name in exposed, f"{panel['title']}: {name} is not in /metrics"
            for label, value in re.findall(r'(\w+)="([^"~]+)"', target["expr"]):
                assert any(f'{label}="{value}"' in labels for n in names for labels in exposed[n]), (
                    f"{panel['title']}: no series with {label}={value!r}"
                )


# The production architecture's figures, as `make bench-production` measured and committed them:
# at the precision the start-up choice served, and at fp32, which the arm64 image serves.
PRODUCTION_REPORTS = [
    helpers.ROOT / "benchmarks" / name for name in ("REPORT-production.md", "REPORT-production-fp32.md")
]
MEMORY_MARGIN = 1.5  # batches of 8 and the runtime's arenas grow past the PSS after a load
STARTUP_MARGIN = 3  # a slower CPU, a cold page cache, a busy node


def production_figures() -> tuple[dict[str, float], float]:
    """The Bento's largest PSS by process after 16 users (MB), and its longest time to /readyz."""
    pss: dict[str, float] = {}
    ready = 0.0
    for path in PRODUCTION_REPORTS:
        text = path.read_text()
        by_process = re.search(r"^PSS by process after the load \(MB\): .*?\(d\) ([^;\n]+)", text, re.MULTILINE).group(
            1
        )
        for name, mb in re.findall(r"(\w+) (\d+)", by_process):
            pss[name] = max(pss.get(name, 0.0), float(mb))
        ready = max(
            ready, float(re.search(r"time from `bentoml serve` to /readyz for \(d\): ([\d.]+) s", text).group(1))
        )
    return pss, ready


def test_memory_limits_and_start_budgets_hold_the_production_models_measured_figures():
    """Sized for the model production serves (SigLIP-B/16), not the embedded default."""
    from tests.deploy.test_k8s import quantity

    pss_mb, ready_s = production_figures()
    assert {"classifier", "gateway"} <= set(pss_mb), pss_mb
    backend = compose("docker-compose.yml")["x-backend"]
    assert megabytes(backend["mem_limit"]) >= MEMORY_MARGIN * sum(pss_mb.values()), (backend["mem_limit"], pss_mb)
    start_period = int(backend["healthcheck"]["start_period"].removesuffix("s"))
    assert start_period >= STARTUP_MARGIN * ready_s, (start_period, ready_s)
    for name in ("classifier", "gateway"):
        container = helpers.k8s_container(name)
        limit_mb = quantity(container["resources"]["limits"]["memory"]) / 2**20
        assert limit_mb >= MEMORY_MARGIN * pss_mb[name], (name, limit_mb, pss_mb[name])
        assert quantity(container["resources"]["requests"]["memory"]) / 2**20 >= pss_mb[name], name
    startup = helpers.k8s_container("classifier")["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= STARTUP_MARGIN * ready_s
