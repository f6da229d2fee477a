"""The docs site builds with MkDocs in strict mode: every page in the nav, no broken link
or anchor between pages (mkdocs.yml's validation settings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests import helpers


def test_the_docs_site_builds_strict(tmp_path):
    mkdocs = Path(sys.executable).with_name("mkdocs")
    result = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=helpers.ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for page in ("index.html", "routes/index.html", "reference/errors/index.html", "DELIVERY/index.html"):
        assert (tmp_path / "site" / page).exists(), page
