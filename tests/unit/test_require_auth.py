"""TIKKA_REQUIRE_AUTH: the service does not start without keys (docker/k8s sets it)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests import helpers


def import_service(**env: str) -> subprocess.CompletedProcess:
    variables = {k: v for k, v in os.environ.items() if not k.startswith("TIKKA_")} | env
    return subprocess.run([sys.executable, "-c", "import service"], cwd=helpers.ROOT, env=variables,
                          capture_output=True, text=True, timeout=120)


def test_required_auth_without_keys_refuses_to_start_and_with_keys_starts():
    refused = import_service(TIKKA_REQUIRE_AUTH="true")
    assert refused.returncode != 0
    assert "TIKKA_REQUIRE_AUTH is set and TIKKA_API_KEYS is empty" in refused.stderr
    assert import_service(TIKKA_REQUIRE_AUTH="true", TIKKA_API_KEYS='["k"]').returncode == 0
