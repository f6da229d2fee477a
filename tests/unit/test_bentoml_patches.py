"""tikka/bentoml_patches.py refuses a BentoML it was not written for (the workarounds patch
private internals; their own tests are named in the module)."""

from __future__ import annotations

import subprocess
import sys

import bentoml

from tests import helpers
from tikka import bentoml_patches


def import_with_version(version: str) -> subprocess.CompletedProcess:
    code = f"import bentoml; bentoml.__version__ = {version!r}; import tikka.bentoml_patches"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=helpers.ROOT, timeout=120)


def test_the_pinned_bentoml_is_the_one_the_workarounds_were_written_for():
    assert bentoml.__version__ == bentoml_patches.WRITTEN_FOR
    assert import_with_version(bentoml_patches.WRITTEN_FOR).returncode == 0


def test_another_bentoml_version_fails_loudly_at_import():
    result = import_with_version("1.5.0")
    assert result.returncode != 0
    assert "RuntimeError" in result.stderr and "1.5.0" in result.stderr and bentoml_patches.WRITTEN_FOR in result.stderr
