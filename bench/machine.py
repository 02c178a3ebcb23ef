"""The facts a benchmark figure is meaningless without: when, on what CPU, with how many cores."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def describe() -> dict[str, object]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "isa": _isa_flags(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "versions": _versions(),
    }


def _cpu_info() -> str:
    path = Path("/proc/cpuinfo")
    return path.read_text() if path.is_file() else ""


def _cpu_model() -> str:
    for line in _cpu_info().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _isa_flags() -> list[str]:
    """The vector extensions that decide fp32, bf16 and int8 GEMM speed."""
    for line in _cpu_info().splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            wanted = (
                "avx2",
                "fma",
                "avx512f",
                "avx512_vnni",
                "avx512_bf16",
                "avx_vnni",
                "amx_int8",
                "amx_bf16",
            )
            return [f for f in wanted if f in flags]
    return []


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "onnxruntime", "transformers", "sentence-transformers", "rerankd"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found
