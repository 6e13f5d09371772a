"""The CPU's instruction-set features, as the operating system reports them.

Read from ``/proc/cpuinfo`` on Linux and from ``sysctl`` on macOS (Intel and Apple Silicon). Flags are
normalised to the lower-case names Linux uses (``avx2``, ``avx512f``, ``avx512_vnni``, ``avx_vnni``), so
one rule serves both systems. Parsing is pure (text in, flags out); only ``read_cpu`` touches the system.
"""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

X86_MACHINES = {"x86_64", "amd64", "x64", "i386", "i686"}
ARM_MACHINES = {"arm64", "aarch64", "armv8l"}
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
# the flags worth showing in a summary: what ONNX Runtime's integer kernels are chosen by
SUMMARY_FLAGS = ("sse4_1", "avx", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8",
                 "asimddp", "feat_dotprod", "i8mm", "feat_i8mm")
# macOS sysctl spellings that do not become the Linux name by lower-casing and "." -> "_"
_SYSCTL_NAMES = {"avx1_0": "avx", "avx512vnni": "avx512_vnni", "avxvnni": "avx_vnni", "sse4_1": "sse4_1",
                 "sse4_2": "sse4_2", "amxint8": "amx_int8"}
SYSCTL_KEYS = ("machdep.cpu.features", "machdep.cpu.leaf7_features", "hw.optional")


@dataclass(frozen=True)
class CpuFeatures:
    machine: str  # "x86_64", "arm64" or what the system calls it, lower case
    flags: frozenset[str]

    @property
    def is_x86(self) -> bool:
        return self.machine in X86_MACHINES

    @property
    def is_arm(self) -> bool:
        return self.machine in ARM_MACHINES

    @property
    def has_vnni(self) -> bool:
        return bool(self.flags & VNNI_FLAGS)

    def summary(self) -> str:
        """``x86_64: avx2 avx512f avx512_vnni`` — the machine and its flags that matter for INT8."""
        shown = [f for f in SUMMARY_FLAGS if f in self.flags]
        return f"{self.machine}: {' '.join(shown) if shown else '(no SIMD flags reported)'}"


def normalise_machine(machine: str) -> str:
    m = machine.strip().lower()
    return "x86_64" if m in ("amd64", "x64") else "arm64" if m == "aarch64" else m


def parse_proc_cpuinfo(text: str) -> frozenset[str]:
    """The flags of the first processor in ``/proc/cpuinfo``: ``flags`` on x86, ``Features`` on arm64."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def _sysctl_flag(name: str) -> str:
    n = name.strip().lower().replace(".", "_")
    return _SYSCTL_NAMES.get(n, n)


def parse_sysctl(text: str) -> frozenset[str]:
    """Flags from ``sysctl machdep.cpu.features machdep.cpu.leaf7_features hw.optional`` output.

    Intel Macs list features by name (``machdep.cpu.leaf7_features: ... AVX2 ... AVX512VNNI``); Apple
    Silicon has no ``machdep.cpu.features`` and says ``hw.optional.arm.FEAT_DotProd: 1`` instead (the
    last component of a ``hw.optional`` key whose value is 1 becomes a flag)."""
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep:
            continue
        if key.startswith("machdep.cpu.") and key.endswith("features"):
            flags.update(_sysctl_flag(v) for v in value.split())
        elif key.startswith("hw.optional.") and value.strip() == "1":
            flags.add(_sysctl_flag(key.rsplit(".", 1)[-1]))
    return frozenset(flags)


def read_cpu(system: str | None = None, machine: str | None = None) -> CpuFeatures:
    """This machine's CPU features (empty flags when the system does not say)."""
    system = system or platform.system()
    machine = normalise_machine(machine or platform.machine())
    if system == "Linux":
        try:
            return CpuFeatures(machine, parse_proc_cpuinfo(Path("/proc/cpuinfo").read_text()))
        except OSError:
            return CpuFeatures(machine, frozenset())
    if system == "Darwin":
        # unknown keys (machdep.* on Apple Silicon) go to stderr; the known ones still print
        done = subprocess.run(["sysctl", *SYSCTL_KEYS], capture_output=True, text=True, check=False)
        return CpuFeatures(machine, parse_sysctl(done.stdout))
    return CpuFeatures(machine, frozenset())
