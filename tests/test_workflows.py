"""The GitHub Actions workflows: actionlint passes on every one, and the few promises
the README's "Delivery" section makes about them hold."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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


def test_images_are_multi_arch_with_a_build_cache():
    text = (WORKFLOWS / "images.yml").read_text()
    assert "PLATFORMS: linux/amd64,linux/arm64" in text
    assert "bentoml containerize" in text and "--backend buildx" in text
    assert text.count("type=gha") >= 4  # cache-from and cache-to for the Bento and the matrix


def test_deploy_checks_production_and_rolls_back():
    steps = workflow("deploy.yml")["jobs"]["deploy"]["steps"]
    runs = [step.get("run", "") for step in steps]
    assert any("make test-api BASE_URL=" in run for run in runs)
    rollback = next(step for step in steps if step.get("name", "").startswith("Roll back"))
    assert rollback["if"] == "failure()" and "TIKKA_PREVIOUS_TAG" in rollback["run"]


def test_secrets_are_referenced_by_name_and_documented():
    names = set()
    for path in WORKFLOWS.glob("*.yml"):
        names |= set(re.findall(r"secrets\.([A-Z_]+)", path.read_text()))
    readme = (helpers.ROOT / "README.md").read_text()
    assert names == {"GITHUB_TOKEN", "DEPLOY_SSH_KEY", "DEPLOY_KNOWN_HOSTS", "DEPLOY_USER", "DEPLOY_HOST", "TIKKA_API_KEY"}
    for name in names - {"GITHUB_TOKEN"}:
        assert f"`{name}`" in readme, f"{name} is not in the README's Delivery section"
