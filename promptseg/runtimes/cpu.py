"""What the CPU executes natively: bf16 and int8 instructions, from its flags and OpenVINO.

Reduced precision is only worth it where the CPU has instructions for it; elsewhere
a runtime emulates it (slower than fp32, measured: NNCF int8 2.3x slower than fp32
on an AVX2 CPU without VNNI). Two sources say what the CPU has:

- the kernel's CPU flags (``/proc/cpuinfo`` on Linux): ``avx512_bf16`` /
  ``amx_bf16`` for bf16, ``avx512_vnni`` / ``avx_vnni`` / ``amx_int8`` for int8;
- OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of its CPU plugin (``"BF16"`` is listed
  only where bf16 is native; ``"INT8"`` is listed on every x86 CPU, so int8 also
  needs a VNNI/AMX flag).

Both must agree where both are known; off Linux the flags are unknown and
OpenVINO's answer decides bf16 (int8 is then not called native).
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

#: CPU flags (``/proc/cpuinfo`` spelling) that execute bf16 matrix maths natively
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
#: CPU flags that execute int8 dot products natively (VNNI, AMX)
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
#: the flags worth recording with a benchmark or a precision verdict
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512_fp16",
                  "amx_bf16", "amx_int8", "amx_tile")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and flags (``flags`` None where they cannot be read)."""

    model: str
    flags: Optional[frozenset[str]]

    def has_any(self, wanted: frozenset[str]) -> Optional[bool]:
        """True/False when the flags are known, None when they are not."""
        return None if self.flags is None else bool(self.flags & wanted)

    def reported_flags(self) -> list[str]:
        """The flags of :data:`REPORTED_FLAGS` this CPU has."""
        return [flag for flag in REPORTED_FLAGS if self.flags and flag in self.flags]


def parse_cpuinfo(text: str) -> CpuInfo:
    """``/proc/cpuinfo`` text -> :class:`CpuInfo` (first processor's ``model name`` and ``flags``)."""
    model, flags = "", None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = frozenset(value.split())
    return CpuInfo(model=model or platform.processor() or platform.machine(), flags=flags)


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's :class:`CpuInfo` (flags None off Linux)."""
    try:
        return parse_cpuinfo(CPUINFO.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return CpuInfo(model=platform.processor() or platform.machine(), flags=None)


@functools.lru_cache(maxsize=1)
def openvino_capabilities() -> Optional[frozenset[str]]:
    """OpenVINO CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (None without OpenVINO)."""
    try:
        from .openvino_backend import core

        return frozenset(str(c) for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # not installed, or no CPU plugin
        return None


def native_precisions(cpu: Optional[CpuInfo] = None, capabilities: Optional[frozenset[str]] = None) -> dict[str, str]:
    """Reduced precisions the CPU runs natively, with the evidence.

    Args:
        cpu: default :func:`cpu_info`.
        capabilities: OpenVINO's capabilities; default :func:`openvino_capabilities`.

    Returns:
        ``{"bf16": why, "int8": why}`` for the native ones only, e.g.
        ``{"bf16": "CPU flags amx_bf16, avx512_bf16; OpenVINO lists BF16"}``.
    """
    cpu = cpu or cpu_info()
    capabilities = openvino_capabilities() if capabilities is None else capabilities
    found: dict[str, str] = {}
    for precision, flags, capability in (("bf16", BF16_FLAGS, "BF16"), ("int8", INT8_FLAGS, "INT8")):
        by_flags = cpu.has_any(flags)
        by_runtime = None if capabilities is None else capability in capabilities
        if by_flags is False or by_runtime is False:
            continue
        if by_flags is None and (precision == "int8" or by_runtime is None):
            continue  # INT8 is listed on every x86 CPU: without flags, int8 is not known to be native
        evidence = []
        if by_flags:
            evidence.append("CPU flags " + ", ".join(sorted(cpu.flags & flags)))  # type: ignore[operator]
        if by_runtime:
            evidence.append(f"OpenVINO lists {capability}")
        found[precision] = "; ".join(evidence)
    return found
