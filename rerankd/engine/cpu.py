"""What this CPU can do, read once from /proc/cpuinfo: picks the int8 scheme and bf16.

Kept apart from the quantizer so `EngineOptions` can check a precision against the CPU
without importing ONNX tooling.
"""

from __future__ import annotations

from pathlib import Path

# bf16 matrix units: AVX512_BF16 (vdpbf16ps) or AMX tiles. Without them torch emulates bf16
# through fp32 and is slower than fp32 itself, so bf16 is refused there.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (x86 `flags`, Arm `Features`), empty where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def has_bf16(flags: frozenset[str]) -> bool:
    """Whether bf16 runs natively (and so faster than fp32) on a CPU with these flags."""
    return bool(flags & BF16_FLAGS)
