"""Classifier replicas behind a per-connection balancer, as kube-proxy balances a Service:
Debian's haproxy in TCP mode between one gateway and two classifier processes, under a
Locust load. A replica added during the load gets its share of the classify calls (the
gateway renews its connection pool), and a replica scaled in (taken out of the balancer,
the manifest's preStop, then SIGTERM) costs no client request (BentoML finishes the calls
in flight; a call on a connection it closed is retried once).

Kubernetes itself cannot run here; haproxy stands in for what matters of it: new
connections go to the ready endpoints, round robin, and established ones stay where they
are (kube-proxy's conntrack) until either end closes them.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests import helpers, records

pytestmark = [pytest.mark.slow, pytest.mark.served]

TOKEN = {"TIKKA_INTERNAL_TOKEN": "scale-out-test"}
USERS = 6
# The bar: within 60 s of its start, a new replica serves at least 30% of the calls.
SHARE_WITHIN_S = 60
MIN_SHARE = 0.30


def adapter_rule() -> dict:
    import yaml

    values = yaml.safe_load((helpers.ROOT / "docker" / "k8s" / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    return rule


ADAPTER_SERIES = adapter_rule()["seriesQuery"].partition("{")[0]


class Balancer:
    """haproxy, TCP mode, round robin over the ready servers (an HTTP check on /readyz);
    servers are added and drained through its admin socket, as endpoints change."""

    def __init__(self, folder: Path):
        self.admin = folder / "admin.sock"
        self.listener = socket.create_server(("127.0.0.1", 0))  # handed to haproxy: no port race
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        config = folder / "haproxy.cfg"
        config.write_text(f"""global
    stats socket {self.admin} level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
frontend classifier
    bind fd@{self.listener.fileno()}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
""")
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        assert os.path.exists(haproxy), "haproxy is missing: make haproxy (Debian's package)"
        self.process = subprocess.Popen(
            [haproxy, "-db", "-f", str(config)],
            pass_fds=[self.listener.fileno()],
            stdout=subprocess.DEVNULL,
            stderr=open(folder / "haproxy.log", "wb"),
        )
        deadline = time.monotonic() + 10
        while not self.admin.exists():
            assert self.process.poll() is None and time.monotonic() < deadline, (folder / "haproxy.log").read_text()
            time.sleep(0.05)

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.admin))
            sock.sendall(line.encode() + b"\n")
            return b"".join(iter(lambda: sock.recv(65536), b"")).decode()

    def add(self, name: str, url: str) -> None:
        address = url.removeprefix("http://")
        answer = self.command(f"add server replicas/{name} {address} check inter 500 rise 1 fall 1")
        assert "New server registered" in answer, answer
        for line in (f"enable health replicas/{name}", f"enable server replicas/{name}"):
            self.command(line)

    def drain(self, name: str) -> None:
        """No new connections; established ones stay, as for a terminating pod's endpoint."""
        self.command(f"set server replicas/{name} state drain")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.listener.close()


def cpu_s(url: str) -> float:
    """CPU seconds of a served Bento's processes, its supervisor and workers."""
    import psutil

    root = psutil.Process(helpers.SERVED[url].pid)
    return sum(sum(p.cpu_times()[:2]) for p in (root, *root.children(recursive=True)))


def in_flight(url: str) -> float:
    """The classify calls a classifier holds now: the series the classifier's HPA scales on
    (docker/k8s/prometheus-adapter/values.yaml)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return helpers.metric_value(text, ADAPTER_SERIES, endpoint="/classify")


def classify_calls(url: str) -> float:
    """The classify calls a classifier has answered, from its own /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return helpers.metric_value(text, "bentoml_service_request_total", endpoint="/classify")


def test_a_new_replica_gets_its_share_and_a_drained_one_loses_no_request(default_model, tmp_path):
    classifier, gateway = helpers.k8s_deployment("classifier"), helpers.k8s_container("gateway")
    container = classifier["spec"]["template"]["spec"]["containers"][0]
    grace_s = classifier["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep", pre_stop
    gateway_env = {e["name"]: e["value"] for e in gateway["env"] if "value" in e and e["name"] != "BENTOML_HOME"}
    dependency = gateway_env["BENTOML_SERVE_DEPENDS"].partition("=")[0]
    start = helpers.start_command(container["args"])

    balancer = Balancer(tmp_path)
    with contextlib.ExitStack() as stack, contextlib.ExitStack() as first_replica:
        stack.callback(balancer.close)
        a = first_replica.enter_context(helpers.served_bento(tmp_path / "a", env=TOKEN, command=start))
        balancer.add("a", a)
        gateway_url = stack.enter_context(
            helpers.served_bento(
                tmp_path / "gateway",
                env={**gateway_env, **TOKEN, "BENTOML_SERVE_DEPENDS": f"{dependency}={balancer.url}"},
                command=helpers.start_command(gateway["args"]),
            )
        )
        load = tmp_path / "load"
        locust = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(helpers.ROOT / "locustfile.py"),
                "PredictUser",
                "--headless",
                "--host",
                gateway_url,
                "-u",
                str(USERS),
                "-r",
                str(USERS),
                "--think-time",
                "0.2",
                "--photos",
                "samples",
                "--csv",
                str(load),
                "--only-summary",
            ],
            cwd=helpers.ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "locust.log", "wb"),
        )
        stack.callback(lambda: locust.poll() is None and locust.kill())
        time.sleep(5)  # the load settles on the one replica

        b_started = time.monotonic()
        b = stack.enter_context(helpers.served_bento(tmp_path / "b", env=TOKEN, command=start))
        balancer.add("b", b)
        b_ready_s = time.monotonic() - b_started
        # Its share of the calls from when it is ready until 60 s after its start; meanwhile
        # the series the autoscaler reads, and the CPU each process takes under this load.
        before = {"a": classify_calls(a), "b": classify_calls(b)}
        processes = {"a": a, "b": b, "gateway": gateway_url}
        cpu_before, cpu_from = {name: cpu_s(url) for name, url in processes.items()}, time.monotonic()
        samples = []
        while time.monotonic() < b_started + SHARE_WITHIN_S:
            samples.append(in_flight(a) + in_flight(b))
            time.sleep(1)
        cores = {
            name: (cpu_s(url) - cpu_before[name]) / (time.monotonic() - cpu_from) for name, url in processes.items()
        }
        after = {"a": classify_calls(a), "b": classify_calls(b)}
        window = {name: after[name] - before[name] for name in after}
        share = window["b"] / max(1.0, sum(window.values()))

        # Scale in replica a as Kubernetes does: out of the endpoints, preStop, SIGTERM.
        balancer.drain("a")
        time.sleep(float(pre_stop[1]))
        drained_at = time.monotonic()
        first_replica.close()  # SIGTERM, then waits for the process to end
        drained_in_s = time.monotonic() - drained_at
        time.sleep(15)  # the load goes on, on replica b alone
        retries = helpers.metric_value(httpx.get(f"{gateway_url}/metrics").text, "tikka_classifier_retries_total")
        locust.send_signal(signal.SIGINT)  # Locust writes its CSV and exits
        locust.wait(timeout=60)

    with open(f"{load}_stats.csv") as fh:
        total = next(row for row in csv.DictReader(fh) if row["Name"] == "Aggregated")
    requests, failures = int(total["Request Count"]), int(total["Failure Count"])
    records.record(
        "scale_out",
        [
            {
                "case": f"replica b started beside a under {USERS} Locust users (photos, 0.2 s think time)",
                "figure": f"b ready {b_ready_s:.0f} s after its start; b's share of the classify calls from"
                f" then until {SHARE_WITHIN_S} s after its start: {share:.0%}"
                f" ({window['b']:.0f} of {sum(window.values()):.0f})",
            },
            {
                "case": f"replica a scaled in: drained in haproxy, preStop `{' '.join(pre_stop)}`, SIGTERM",
                "figure": f"{failures} failed of {requests} client requests; a exited {drained_in_s:.1f} s after"
                f" SIGTERM (grace {grace_s} s); {retries:.0f} classify calls retried by the gateway",
            },
            {
                "case": f'the autoscaler\'s series, {ADAPTER_SERIES}{{endpoint="/classify"}}, summed over a and b once a second',
                "figure": f"{len(samples)} samples, mean {statistics.mean(samples):.1f}, max {max(samples):.0f} calls in flight",
            },
            {
                "case": "CPU under that load (2-core machine, all processes on it)",
                "figure": f"cores used: classifier a {cores['a']:.2f}, classifier b {cores['b']:.2f}, gateway {cores['gateway']:.2f}",
            },
        ],
        balancer="haproxy 2.6, TCP mode, round robin (per connection, as kube-proxy)",
        gateway_connections="one per classify call (tikka/bentoml_patches.py, workaround 7)",
    )
    assert share >= MIN_SHARE, f"replica b served {share:.0%} of the calls {SHARE_WITHIN_S} s after its start: {window}"
    assert failures == 0, f"{failures} of {requests} client requests failed while a replica was scaled in"
    assert drained_in_s < grace_s, f"replica a took {drained_in_s:.0f} s to exit, past the {grace_s} s grace"
    assert requests > 100, requests
    assert max(samples) >= 1, f"the in-flight series never rose under load: {samples}"
