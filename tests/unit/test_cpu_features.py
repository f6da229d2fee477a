"""The CPU's features, read at run time from /proc/cpuinfo."""

from __future__ import annotations

import platform

from tikka.model.cpu import arm64_hwcap_flags, cpu_label, cpu_model_and_flags

EPYC_AVX2 = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma bmi2
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
AXION = """processor\t: 0
BogoMIPS\t: 2000.00
Features\t: fp asimd aes asimddp sve asimdfhm sve2 svei8mm svebf16 i8mm bf16 rng
CPU implementer\t: 0x41
CPU part\t: 0xd4f
"""


def test_each_cpu_says_what_it_has():
    assert cpu_model_and_flags(EPYC_AVX2) == ("AMD EPYC 7B13", ["avx2"])
    assert cpu_model_and_flags(SAPPHIRE_RAPIDS)[1] == [
        "avx2",
        "avx512f",
        "avx512_vnni",
        "avx512_bf16",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
    ]
    assert cpu_model_and_flags(AXION) == ("Neoverse V2", ["asimddp", "bf16", "i8mm", "sve", "sve2"])


def test_this_machine_is_read_not_assumed():
    assert platform.machine() in cpu_label() and "flags: " in cpu_label()


def test_arm64_features_come_from_the_auxiliary_vector():
    """What an Axion's kernel puts in AT_HWCAP and AT_HWCAP2 (QEMU's Neoverse-class "max"
    model sets the same bits), and a Neoverse N1's, which has dot product only."""
    axion = {16: 1 << 20 | 1 << 22 | 0b1011, 26: 1 << 1 | 1 << 13 | 1 << 14 | 1 << 2}
    assert arm64_hwcap_flags(axion.get) == {"asimddp", "sve", "sve2", "i8mm", "bf16"}
    assert arm64_hwcap_flags({16: 1 << 20, 26: 0}.get) == {"asimddp"}
