"""What the serving CPU offers, read at run time (never assumed: machines differ)."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

# The instruction sets that decide which precisions can pay: bf16 and int8 dot products
# (x86: AVX-512 VNNI and BF16, AMX; arm64: dot product, bf16, i8mm, SVE).
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8",
         "asimddp", "bf16", "i8mm", "sve", "sve2")

# Arm's cores name themselves by part number only.
ARM_PARTS = {"0xd0c": "Neoverse N1", "0xd40": "Neoverse V1", "0xd49": "Neoverse N2", "0xd4f": "Neoverse V2"}


def cpu_model_and_flags(cpuinfo: str | None = None) -> tuple[str, list[str]]:
    """The CPU's model name and which of FLAGS it has (/proc/cpuinfo; Linux)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    model = re.search(r"^(?:model name|Model|CPU part)\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    found = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    flags = set(found.group(1).split()) if found else set()
    name = model.group(1).strip() if model else platform.processor() or platform.machine()
    name = ARM_PARTS.get(name, name)
    return name, [flag for flag in FLAGS if flag in flags]


def cpu_label() -> str:
    name, present = cpu_model_and_flags()
    return (f"{name} ({platform.machine()}), {os.cpu_count()} CPUs; flags: "
            f"{', '.join(present) or 'none of ' + ', '.join(FLAGS)}")


# The flags that mean native bf16 arithmetic: x86's AVX-512 BF16 or AMX, arm64's BF16.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    return any(flag in BF16_FLAGS for flag in cpu_model_and_flags(cpuinfo)[1])
