"""`make help` lists every target, from the comments beside them; the daily targets stay in the
top-level Makefile, the image, delivery and benchmark targets in the files it includes."""

from __future__ import annotations

import re
import subprocess

from tests import helpers

MAKEFILES = ("Makefile", "docker/docker.mk", "benchmarks/benchmarks.mk")
DAILY = ("setup", "serve", "ui", "lint", "format", "test-unit", "test", "docs", "import-model")


def targets(path: str) -> set[str]:
    """The targets a makefile declares: `name [name...]:` at the start of a line, not a variable or a file."""
    names = set()
    for line in (helpers.ROOT / path).read_text().splitlines():
        if (match := re.match(r"^([a-z][a-z0-9 %-]*):(?!=)", line)) and not line.startswith("export"):
            names.update(match.group(1).split())
    return names


def test_make_help_lists_every_target_with_a_line_of_its_own():
    listed = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=helpers.ROOT, capture_output=True, text=True, check=True
    ).stdout
    described = {}
    for line in listed.splitlines():
        names, _, text = line.strip().partition("  ")
        for name in names.split():
            described[name] = text.strip()
    declared = set().union(*(targets(path) for path in MAKEFILES)) - {"image-%"}
    assert declared - set(described) == set(), "targets without a `## ` line"
    assert all(described.values()), described


def test_the_daily_targets_are_in_the_top_level_makefile():
    assert set(DAILY) <= targets("Makefile")
    assert {"test-images", "test-delivery", "images"} <= targets("docker/docker.mk")
    assert {"bench", "load", "profile"} <= targets("benchmarks/benchmarks.mk")
