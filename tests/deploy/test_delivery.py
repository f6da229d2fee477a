"""The delivery scripts (docker/delivery/, docker/deploy/), each alone and fast.

The whole path, from the workflows' steps to deploys and rollbacks under load, runs in
`make test-delivery` (podman, a local registry, the GCS emulator); these pin the parts
that need none of that, so that a regression shows in seconds.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import helpers

DELIVERY = helpers.ROOT / "docker" / "delivery"
DEPLOY = helpers.ROOT / "docker" / "deploy" / "deploy.sh"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"


def run(args, env: dict, cwd=helpers.ROOT) -> subprocess.CompletedProcess:
    """A script in a clean environment, as a runner step starts: only what `env` gives."""
    return subprocess.run(
        args,
        env={"PATH": CLEAN_PATH, "HOME": "/nonexistent", **env},
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def tags(**env) -> dict:
    result = run([str(DELIVERY / "image-tags.sh")], env)
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def test_registry_path_is_lower_case_whatever_the_owner():
    out = tags(GITHUB_REPOSITORY_OWNER="TikkaMasalAI", GITHUB_SHA=COMMIT, GITHUB_REF="refs/heads/main")
    assert out == {"registry": "ghcr.io/tikkamasalai", "sha_tag": COMMIT[:12], "tags": COMMIT[:12]}


def test_a_version_tag_push_adds_the_version_and_github_output_gets_the_same(tmp_path):
    output = tmp_path / "github_output"
    out = tags(
        GITHUB_REPOSITORY_OWNER="Acme",
        GITHUB_SHA=COMMIT,
        GITHUB_REF="refs/tags/v1.2.3",
        REGISTRY_HOST="127.0.0.1:5000",
        GITHUB_OUTPUT=str(output),
    )
    assert out["tags"] == f"{COMMIT[:12]} 1.2.3" and out["registry"] == "127.0.0.1:5000/acme"
    assert output.read_text().splitlines() == [f"{k}={v}" for k, v in out.items()]


@pytest.mark.parametrize(("sha", "ref"), [("abc123", "refs/heads/main"), (COMMIT, "refs/tags/v1.0+build")])
def test_tags_refuse_what_cannot_be_an_image_tag(sha, ref):
    result = run(
        [str(DELIVERY / "image-tags.sh")], {"GITHUB_REPOSITORY_OWNER": "a", "GITHUB_SHA": sha, "GITHUB_REF": ref}
    )
    assert result.returncode == 2 and result.stderr


@pytest.mark.parametrize("script", ["build-bento.sh", "publish-image.sh"])
def test_bentoml_steps_refuse_to_run_without_the_projects_model_store(script):
    """Outside make, bentoml would use ~/bentoml and not find the Bento `make` built."""
    result = run([str(DELIVERY / script), "backend"], {"REGISTRY": "r", "TAGS": "t"})
    assert result.returncode != 0 and "BENTOML_HOME" in result.stderr


def stand_in_gh(tmp_path: Path, answers: list[str]) -> Path:
    """A `gh` that answers `gh run list` from a script: GitHub's API cannot be reached here.
    Each call prints the next answer (status and conclusion, as wait-for-ci.sh's --jq asks)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "answers").write_text("\n".join(answers) + "\n")
    gh = bin_dir / "gh"
    gh.write_text(
        f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\nhead -n 1 {tmp_path}/answers\nsed -i 1d {tmp_path}/answers\n'
    )
    gh.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize(
    ("answers", "code"),
    [
        (["completed success"], 0),
        (["in_progress null", "queued null", "completed success"], 0),
        (["in_progress null", "completed failure"], 1),
        (["completed cancelled"], 1),
    ],
)
def test_wait_for_ci_deploys_only_a_commit_whose_ci_passed(tmp_path, answers, code):
    bin_dir = stand_in_gh(tmp_path, answers)
    result = run([str(DELIVERY / "wait-for-ci.sh"), COMMIT], {"PATH": f"{bin_dir}:{CLEAN_PATH}", "POLL_S": "0"})
    assert result.returncode == code, result.stdout + result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == len(answers) and all(
        f"--commit {COMMIT}" in call and "--workflow ci.yml" in call for call in calls
    )


def test_wait_for_ci_gives_up_when_no_ci_run_appears(tmp_path):
    bin_dir = stand_in_gh(tmp_path, ["null null"] * 3)
    result = run(
        [str(DELIVERY / "wait-for-ci.sh"), COMMIT], {"PATH": f"{bin_dir}:{CLEAN_PATH}", "POLL_S": "0", "WAIT_S": "0"}
    )
    assert result.returncode == 1 and "no CI run" in result.stdout


def test_deploy_without_the_release_files_fails_before_any_change(tmp_path):
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / ".env").write_text("TIKKA_REGISTRY=r\n")
    (tmp_path / "state.env").write_text("ACTIVE_TAG=v1\nACTIVE_SLOT=blue\nPREVIOUS_TAG=\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = run([str(DEPLOY), str(tmp_path), "v2"], {"COMPOSE": "false"})
    assert result.returncode == 2 and "no release files" in result.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_rollback_without_a_previous_release_changes_nothing(tmp_path):
    (tmp_path / "state.env").write_text("ACTIVE_TAG=v1\nACTIVE_SLOT=blue\nPREVIOUS_TAG=\n")
    result = run([str(DEPLOY), str(tmp_path), "--rollback"], {"COMPOSE": "false"})
    assert result.returncode == 2 and "no previous release" in result.stderr


def test_report_counts_each_failed_request_in_the_phase_it_happened(tmp_path, monkeypatch):
    """The deploy table's per-phase failures come from Locust's cumulative history: a
    failure at t=12 is in the phase that started at 11, none in the others."""
    sys.path.insert(0, str(DELIVERY))
    import report

    monkeypatch.setattr(report, "RUN", tmp_path)
    monkeypatch.setattr(report, "RECORDS", tmp_path / "records.jsonl")
    log = tmp_path / "deploy.log"
    log.write_text("10.0 phase deploy v2\n11.0 phase switch nginx\n13.0 phase deployed v2\nnoise line\n")
    prefix = tmp_path / "load"
    fields = ["Timestamp", "Name", "Total Request Count", "Total Failure Count"]
    with open(f"{prefix}_stats_history.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        for t, requests, failures in [(9, 5, 0), (10, 10, 0), (11, 15, 0), (12, 20, 1), (13, 25, 1), (14, 30, 1)]:
            writer.writerow([t, "Aggregated", requests, failures])
    with open(f"{prefix}_stats.csv", "w", newline="") as f:
        csv.writer(f).writerows([["Name", "Request Count", "Failure Count"], ["Aggregated", 30, 1]])
    report.deploy("v2", "abc", "0", "0", str(log), str(prefix))
    record = json.loads((tmp_path / "records.jsonl").read_text())
    assert [(p["what"], p["requests"], p["failures"]) for p in record["phases"]] == [
        ("deploy v2", 5, 0),
        ("switch nginx", 10, 1),
        ("deployed v2", 5, 0),
    ]
    assert record["load"] == {"requests": 30, "failures": 1}
    report.render(str(tmp_path / "DELIVERY.md"))
    assert "| 1.0 | switch nginx | 2.0 | 10 | 1 |" in (tmp_path / "DELIVERY.md").read_text()


def test_scripts_are_executable_and_pass_bash_n():
    scripts = sorted(DELIVERY.glob("*.sh")) + [DEPLOY, DEPLOY.with_name("ship-release.sh")]
    for script in scripts:
        assert os.access(script, os.X_OK), script
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
