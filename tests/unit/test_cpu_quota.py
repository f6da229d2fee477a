"""Threads follow the cgroup's CPU quota, not the node's cores (tikka/settings.py)."""

from __future__ import annotations

import os

from tikka import settings as settings_module
from tikka.settings import Settings, cgroup_cpu_quota


def cgroup_tree(tmp_path, limits: dict[str, str], own: str):
    root = tmp_path / "sys-fs-cgroup"
    for relative, cpu_max in limits.items():
        folder = root / relative
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cpu.max").write_text(cpu_max + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return root, proc


def test_the_tightest_quota_on_the_way_up_counts(tmp_path):
    root, own = cgroup_tree(
        tmp_path,
        {
            ".": "max 100000",
            "kubepods": "800000 100000",
            "kubepods/pod-a": "150000 100000",
            "kubepods/pod-a/c": "max 100000",
        },
        "/kubepods/pod-a/c",
    )
    assert cgroup_cpu_quota(root, own) == 1.5


def test_cgroup_v1_quota(tmp_path):
    """Hosts still on cgroup v1 (this project's CI machines among them) put it in the cpu controller."""
    container = tmp_path / "sys-fs-cgroup" / "cpu,cpuacct" / "machine" / "libpod-1"
    container.mkdir(parents=True)
    (container / "cpu.cfs_quota_us").write_text("100000\n")
    (container / "cpu.cfs_period_us").write_text("100000\n")
    (container.parent / "cpu.cfs_quota_us").write_text("-1\n")
    (container.parent / "cpu.cfs_period_us").write_text("100000\n")
    own = tmp_path / "proc-self-cgroup"
    own.write_text("4:memory:/machine/libpod-1\n2:cpu,cpuacct:/machine/libpod-1\n0::/\n")
    assert cgroup_cpu_quota(tmp_path / "sys-fs-cgroup", own) == 1.0


def test_no_limit_and_no_cgroup_are_none(tmp_path):
    root, own = cgroup_tree(tmp_path, {".": "max 100000", "user": "max 100000"}, "/user")
    assert cgroup_cpu_quota(root, own) is None
    assert cgroup_cpu_quota(tmp_path / "absent", tmp_path / "absent-too") is None


def test_settings_default_to_the_quota_rounded_up(monkeypatch):
    monkeypatch.setattr(settings_module, "cgroup_cpu_quota", lambda: 1.5)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))
    for name in ("TIKKA_INFERENCE_THREADS", "TIKKA_DECODE_THREADS"):
        monkeypatch.delenv(name, raising=False)
    chosen = Settings()
    assert (chosen.inference_threads, chosen.decode_threads) == (2, 4)
    monkeypatch.setenv("TIKKA_INFERENCE_THREADS", "3")
    assert Settings().inference_threads == 3, "a setting overrides the quota"
    monkeypatch.delenv("TIKKA_INFERENCE_THREADS")
    monkeypatch.setattr(settings_module, "cgroup_cpu_quota", lambda: None)
    assert Settings().inference_threads == 32, "no quota: the affinity"
