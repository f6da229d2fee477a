"""The GitHub Actions workflows: actionlint passes on every one, and what the delivery
path depends on holds (docs/delivery-pipeline.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import helpers

WORKFLOWS = helpers.ROOT / ".github" / "workflows"


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def test_actionlint_passes_on_every_workflow():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {p.name for p in files} == {"ci.yml", "images.yml", "deploy.yml", "docs.yml"}
    actionlint = Path(sys.executable).with_name("actionlint")
    result = subprocess.run([str(actionlint), *map(str, files)], capture_output=True, text=True, cwd=helpers.ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_the_readme_test_command():
    steps = workflow("ci.yml")["jobs"]["test"]["steps"]
    assert any(step.get("run") == "bash .ci/run" for step in steps)
    assert "make test" in (helpers.ROOT / ".ci" / "run").read_text()


def steps_of(name: str) -> list[dict]:
    return [step for job in workflow(name)["jobs"].values() for step in job["steps"]]


# What a run: step of the delivery workflows may be: one line that calls a script or a
# make target of this repository (or runs the deploy script on the VM), so that the same
# step runs under make test-delivery.
OWN_STEP = re.compile(
    r'(make [a-z-]+|docker/(delivery|deploy)/[a-z-]+\.sh|ssh "\$TARGET" "\$DEPLOY_DIR/releases/\$TAG/deploy/deploy\.sh")( .*)?'
)


@pytest.mark.parametrize("name", ["images.yml", "deploy.yml"])
def test_every_delivery_step_that_does_work_is_a_script_of_the_repo(name):
    runs = [step["run"].strip() for step in steps_of(name) if "run" in step]
    assert runs
    for run in runs:
        assert "\n" not in run and OWN_STEP.fullmatch(run), run
        script = re.match(r"(docker/\S+\.sh)", run)
        if script:
            assert (helpers.ROOT / script.group(1)).stat().st_mode & 0o111, f"{script.group(1)} is not executable"


def test_no_step_uses_the_gha_cache_or_metadata_action_tags():
    """type=gha needs the Actions runtime token, which run: steps lack; metadata-action's
    short SHA is 7 characters (it has no `length`), where the deploy pulls 12."""
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        assert "type=gha" not in text and "metadata-action" not in text, path.name
    publish = (helpers.ROOT / "docker" / "delivery" / "publish-image.sh").read_text()
    assert "type=registry,ref=$cache" in publish and "type=gha" not in publish


def test_images_are_multi_arch_and_carry_the_production_model():
    images = workflow("images.yml")
    assert images["env"]["PLATFORMS"] == "linux/amd64 linux/arm64"
    job = images["jobs"]["images"]
    assert job["permissions"]["id-token"] == "write"
    assert job["strategy"]["matrix"]["image"] == ["backend", "frontend", "llm-sidecar"]
    steps = {step.get("name", step.get("uses")): step for step in job["steps"]}
    auth = next(step for step in job["steps"] if step.get("uses", "").startswith("google-github-actions/auth@"))
    # Workload identity federation: no JSON key in the secrets.
    assert set(auth["with"]) == {"workload_identity_provider", "service_account"}
    assert "vars.TIKKA_GCS_BUCKET != ''" in auth["if"]
    bento = steps["The Bento, with the model the repository variables name"]
    assert bento["run"] == "make bento-release"
    assert bento["env"] == {
        "TIKKA_GCS_BUCKET": "${{ vars.TIKKA_GCS_BUCKET }}",
        "TIKKA_GCS_PREFIX": "${{ vars.TIKKA_GCS_PREFIX }}",
    }
    names = [step.get("name", step.get("uses")) for step in job["steps"]]
    assert names.index(auth.get("name")) < names.index(bento["name"]) < len(names) - 1


def test_deploy_deploys_the_commit_it_was_triggered_for_once_ci_passed():
    job = workflow("deploy.yml")["jobs"]["deploy"]
    steps = job["steps"]
    names = [step.get("name", step.get("uses")) for step in steps]
    checkout = steps[0]
    assert checkout["uses"].startswith("actions/checkout@")
    assert checkout["with"]["ref"] == "${{ github.event.workflow_run.head_sha || github.sha }}"
    wait = steps[names.index("Wait for CI on the commit (a failed CI stops the deploy)")]
    assert wait["env"]["COMMIT"] == "${{ github.event.workflow_run.head_sha }}"
    tags = steps[names.index("The tag to deploy")]
    assert tags["env"]["GITHUB_SHA"] == "${{ github.event.workflow_run.head_sha || github.sha }}"
    login = steps[names.index("The VM logs in to GHCR (read-only token)")]
    assert "GHCR_READ_TOKEN" in login["env"]["GHCR_TOKEN"]
    deploy = steps[names.index("Deploy (blue/green; rolls itself back if the new release is not ready)")]
    assert "steps.tags.outputs.sha_tag" in deploy["env"]["TAG"]
    assert names.index(wait["name"]) < names.index(login["name"]) < names.index(deploy["name"])
    assert any("make test-api BASE_URL=" in step.get("run", "") for step in steps[names.index(deploy["name"]) :])
    rollback = steps[-1]
    # Only a deploy that went through is rolled back: one that failed rolled itself back,
    # or changed nothing (deploy.sh's exit codes).
    assert rollback["if"] == "failure() && steps.deploy.outcome == 'success'"
    assert rollback["run"].endswith("--rollback")


def test_secrets_are_the_documented_set():
    """The secrets the workflows read (docs/delivery-pipeline.md lists what each one is)."""
    names = set()
    for path in WORKFLOWS.glob("*.yml"):
        names |= set(re.findall(r"secrets\.([A-Z_]+)", path.read_text()))
    assert names == {
        "GITHUB_TOKEN",
        "DEPLOY_SSH_KEY",
        "DEPLOY_KNOWN_HOSTS",
        "DEPLOY_USER",
        "DEPLOY_HOST",
        "TIKKA_API_KEY",
        "GHCR_READ_USER",
        "GHCR_READ_TOKEN",
    }
