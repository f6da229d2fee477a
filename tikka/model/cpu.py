"""What the serving CPU offers, read at run time (never assumed: machines differ)."""

from __future__ import annotations

import ctypes
import os
import platform
import re
from pathlib import Path

# The instruction sets that decide which precisions can pay: bf16 and int8 dot products
# (x86: AVX-512 VNNI and BF16, AMX; arm64: dot product, bf16, i8mm, SVE).
FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimddp",
    "bf16",
    "i8mm",
    "sve",
    "sve2",
)

# Arm's cores name themselves by part number only.
ARM_PARTS = {"0xd0c": "Neoverse N1", "0xd40": "Neoverse V1", "0xd49": "Neoverse N2", "0xd4f": "Neoverse V2"}


# arm64 Linux also publishes the features as auxiliary-vector bits (getauxval's AT_HWCAP = 16
# and AT_HWCAP2 = 26; the bits from the kernel's uapi/asm/hwcap.h). They are what the runtimes
# read, and under QEMU's user-mode emulation (the arm64 image on an x86 machine) they describe
# the emulated CPU, while /proc/cpuinfo there is the host's.
ARM64_HWCAPS = {
    "asimddp": (16, 1 << 20),
    "sve": (16, 1 << 22),
    "sve2": (26, 1 << 1),
    "i8mm": (26, 1 << 13),
    "bf16": (26, 1 << 14),
}


def arm64_hwcap_flags(getauxval=None) -> set[str]:
    if getauxval is None:  # glibc's; ctypes because Python's os module does not wrap it
        getauxval = ctypes.CDLL(None).getauxval
        getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    return {flag for flag, (kind, bit) in ARM64_HWCAPS.items() if getauxval(kind) & bit}


def cpu_model_and_flags(cpuinfo: str | None = None) -> tuple[str, list[str]]:
    """The CPU's model name and which of FLAGS it has (/proc/cpuinfo, and on arm64 the
    auxiliary vector; Linux)."""
    on_arm64 = cpuinfo is None and platform.machine() == "aarch64"
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    model = re.search(r"^(?:model name|Model|CPU part)\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    found = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    flags = set(found.group(1).split()) if found else set()
    name = model.group(1).strip() if model else platform.processor() or platform.machine()
    name = ARM_PARTS.get(name, name)
    if on_arm64:
        if "CPU part" not in cpuinfo:  # the host's cpuinfo: an emulated arm64
            name = f"arm64 emulated by QEMU on {name}"
        flags = arm64_hwcap_flags()
    return name, [flag for flag in FLAGS if flag in flags]


def cpu_label() -> str:
    name, present = cpu_model_and_flags()
    return (
        f"{name} ({platform.machine()}), {os.cpu_count()} CPUs; flags: "
        f"{', '.join(present) or 'none of ' + ', '.join(FLAGS)}"
    )


# The flags that mean native bf16 arithmetic: x86's AVX-512 BF16 or AMX, arm64's BF16.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    return any(flag in BF16_FLAGS for flag in cpu_model_and_flags(cpuinfo)[1])
