"""One dependency source: pyproject.toml's pins, locked in uv.lock, exported to requirements/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import helpers

UV = Path(sys.executable).parent / "uv"
EXPORTS = {
    "bento.txt": ["--no-default-groups"],
    "models.txt": ["--only-group", "models"],
    "sidecar.txt": ["--only-group", "sidecar"],
    "frontend.txt": ["--only-group", "frontend"],
}


def uv(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(UV), *args], cwd=helpers.ROOT, capture_output=True, text=True, timeout=120)


def test_the_lock_matches_pyproject():
    result = uv("lock", "--check")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", EXPORTS)
def test_each_export_is_the_lock(name, tmp_path):
    """What the Bento (bentofile.yaml) and the images (docker/*.Dockerfile) install is
    exactly the lock's pins: `make lock` regenerates these files."""
    exported = tmp_path / name
    result = uv(
        "export", "--frozen", "--no-hashes", "--no-emit-project", "--quiet", *EXPORTS[name], "-o", str(exported)
    )
    assert result.returncode == 0, result.stderr
    # The first two lines name the command, output path included.
    committed = (helpers.ROOT / "requirements" / name).read_text().splitlines()[2:]
    assert exported.read_text().splitlines()[2:] == committed, f"requirements/{name} is stale: run `make lock`"


def test_the_bento_and_the_images_install_the_exports():
    assert 'requirements_txt: "./requirements/bento.txt"' in (helpers.ROOT / "bentofile.yaml").read_text()
    for dockerfile, export in (("frontend.Dockerfile", "frontend.txt"), ("llm-sidecar.Dockerfile", "sidecar.txt")):
        text = (helpers.ROOT / "docker" / dockerfile).read_text()
        assert f"COPY requirements/{export} " in text and "--no-deps -r " in text, dockerfile
    assert "torch" not in (helpers.ROOT / "requirements" / "bento.txt").read_text()
