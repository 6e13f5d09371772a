"""CPU feature flags from /proc/cpuinfo (Linux) and sysctl (macOS): ``daemon.tools.cpu``."""

from __future__ import annotations

import platform

from daemon.tools import cpu
from daemon.tools.cpu import CpuFeatures

# abridged from real /proc/cpuinfo files: an AVX2-only Intel (Haswell), an AMD EPYC with AVX-512 VNNI,
# an arm64 server (Neoverse N1)
HASWELL = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz
flags\t\t: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt avx f16c rdrand avx2 bmi2 erms
bogomips\t: 4988.35

processor\t: 1
flags\t\t: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt avx f16c rdrand avx2 bmi2 erms
"""
EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse sse2 ssse3 sse4_1 avx avx2 avx512f avx512dq avx512bw avx512vl avx_vnni avx512_vnni
"""
NEOVERSE = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
"""
# `sysctl machdep.cpu.features machdep.cpu.leaf7_features hw.optional` on an Ice Lake MacBook Pro
# (abridged), and on an Apple M1 (no machdep.cpu.* keys: sysctl says "unknown oid" on stderr)
INTEL_MAC = """machdep.cpu.features: FPU VME DE PSE SSE SSE2 SSSE3 FMA CX16 SSE4.1 SSE4.2 POPCNT AVX1.0 RDRAND F16C
machdep.cpu.leaf7_features: RDWRFSGS TSC_THREAD_OFFSET SGX BMI1 AVX2 SMEP BMI2 AVX512F AVX512DQ AVX512BW AVX512VNNI
hw.optional.avx1_0: 1
hw.optional.avx2_0: 1
hw.optional.avx512vnni: 1
"""
APPLE_M1 = """hw.optional.arm.FEAT_DotProd: 1
hw.optional.arm.FEAT_I8MM: 0
hw.optional.neon: 1
hw.optional.arm64: 1
"""


def test_proc_cpuinfo_flags_of_x86_and_arm64():
    assert {"avx2", "sse4_1", "avx"} <= cpu.parse_proc_cpuinfo(HASWELL)
    assert not cpu.parse_proc_cpuinfo(HASWELL) & cpu.VNNI_FLAGS
    assert {"avx512f", "avx512_vnni", "avx_vnni"} <= cpu.parse_proc_cpuinfo(EPYC)
    assert "asimddp" in cpu.parse_proc_cpuinfo(NEOVERSE)
    assert cpu.parse_proc_cpuinfo("processor : 0\nmodel name : ?\n") == frozenset()


def test_sysctl_flags_of_an_intel_mac_and_apple_silicon():
    intel = cpu.parse_sysctl(INTEL_MAC)
    assert {"avx", "avx2", "avx512f", "avx512_vnni", "sse4_1"} <= intel
    apple = cpu.parse_sysctl(APPLE_M1)
    assert {"feat_dotprod", "neon", "arm64"} <= apple
    assert "feat_i8mm" not in apple  # value 0: not a feature
    assert cpu.parse_sysctl("sysctl: unknown oid 'machdep.cpu.features'\n") == frozenset()


def test_features_say_what_int8_needs_to_know():
    haswell = CpuFeatures("x86_64", cpu.parse_proc_cpuinfo(HASWELL))
    epyc = CpuFeatures(cpu.normalise_machine("AMD64"), cpu.parse_proc_cpuinfo(EPYC))
    m1 = CpuFeatures(cpu.normalise_machine("arm64"), cpu.parse_sysctl(APPLE_M1))
    graviton = CpuFeatures(cpu.normalise_machine("aarch64"), cpu.parse_proc_cpuinfo(NEOVERSE))
    assert haswell.is_x86 and not haswell.has_vnni and not haswell.is_arm
    assert epyc.machine == "x86_64" and epyc.has_vnni
    assert m1.is_arm and graviton.is_arm and graviton.machine == "arm64"
    assert haswell.summary() == "x86_64: sse4_1 avx avx2"
    assert epyc.summary() == "x86_64: sse4_1 avx avx2 avx512f avx512bw avx512_vnni avx_vnni"
    assert m1.summary() == "arm64: feat_dotprod"
    assert CpuFeatures("riscv64", frozenset()).summary() == "riscv64: (no SIMD flags reported)"


def test_this_machine_reports_its_baseline_flags():
    """Every x86-64 CPU has SSE2 and every arm64 CPU has Advanced SIMD: the reader really read them."""
    here = cpu.read_cpu()
    if platform.system() in ("Linux", "Darwin") and here.is_x86:
        assert "sse2" in here.flags
    elif platform.system() == "Linux" and here.is_arm:
        assert "asimd" in here.flags
    elif platform.system() == "Darwin" and here.is_arm:
        assert "neon" in here.flags
    assert cpu.read_cpu(system="Plan9", machine="mips") == CpuFeatures("mips", frozenset())
