"""How a model is run: backend, precision, device, threads and sequence limits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rerankd.engine.cpu import cpu_flags, has_bf16

BackendName = Literal["torch", "onnx"]
# "auto" (the server's default) is resolved at load time by rerankd.engine.choice.
BackendSetting = Literal["auto", "torch", "onnx"]
DType = Literal["float32", "float16", "bfloat16", "int8"]

_DTYPE_ALIASES = {
    "fp32": "float32",
    "float32": "float32",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "int8": "int8",
    "qint8": "int8",
}


def default_batch_tokens(
    device: str, backend: BackendName = "torch", dtype: DType = "float32"
) -> int:
    """Padded tokens per batch when none is set, for the backend and precision served.

    A GPU needs big batches to be busy. On a CPU the products are already large at a few
    hundred tokens, and what pays is a batch whose activations stay in the cores' caches and
    whose rows pad little: `python -m bench.batch_budget` (2-core Xeon, AMX; the same pooled
    requests cut at each budget) found ONNX Runtime fp32 and int8 fastest at 512 padded
    tokens (1.12-1.23x their speed at 2048), torch fp32 at 1024 (1.04-1.10x), and torch bf16
    at 2048 (AMX tiles want tall matrices: 0.77x at 1024). On an AMD EPYC Zen 4 (AVX-512,
    no AMX) each mode's best budget was the same.
    """
    if device != "cpu":
        return 16384
    if backend == "onnx":
        return 512
    return 2048 if dtype == "bfloat16" else 1024


def default_batches_in_flight(device: str) -> int:
    """Batches a replica runs at once when none is set.

    On a GPU, two: while one batch's kernels run, the other worker tokenizes, collates and
    copies the next one on its own CUDA stream, so the device does not idle between batches
    (nothing synchronises but each result's copy back). On a CPU one batch already keeps
    every intra-op thread busy; a second would only fight it for the cores.
    """
    return 1 if device == "cpu" else 2


def check_cpu_precision(dtype: str, backend: str, flags: frozenset[str]) -> None:
    """Refuse a half precision this CPU has no unit for: emulated, it is slower than fp32.

    bf16 runs on CPUs with AVX512_BF16 or AMX (torch's oneDNN kernels); fp16 never on CPU.
    """
    if dtype == "float16" or (dtype == "bfloat16" and not has_bf16(flags)):
        raise ValueError(
            f"{dtype} is refused on CPU: this one has no {dtype} unit (bfloat16 needs AVX512_BF16 "
            "or AMX), so it would be slower than float32 and less precise. Use float32 (or "
            "--backend onnx --dtype int8 for speed), or a cuda device."
        )
    if dtype == "bfloat16" and backend == "onnx":
        raise ValueError("bfloat16 on CPU is a torch mode: use --backend torch --dtype bfloat16")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rerankd"


@dataclass(frozen=True)
class EngineOptions:
    """Validated once, so a bad combination fails at start-up with a clear message."""

    backend: BackendSetting = "torch"  # the library's default; the server's is "auto"
    dtype: DType = "float32"
    device: str = "cpu"
    threads: int | None = None
    max_length: int | None = None  # default: the model family's (512 for cross-encoders)
    query_max_length: int | None = None  # default: 3/4 of max_length, as FlagEmbedding does
    cache_dir: Path = field(default_factory=default_cache_dir)
    force_int8: bool = False  # serve int8 even when the export's accuracy probe refuses it
    # Yes/no LLMs on torch: run a request's instruction+query prefix once (families/prefix.py).
    share_prefix: bool = True

    def __post_init__(self) -> None:
        dtype = _DTYPE_ALIASES.get(str(self.dtype).lower())
        if dtype is None:
            raise ValueError(
                f"unknown dtype {self.dtype!r}; use float32, float16, bfloat16 or int8"
            )
        object.__setattr__(self, "dtype", dtype)
        if self.backend not in ("auto", "torch", "onnx"):
            raise ValueError(f"unknown backend {self.backend!r}; use auto, torch or onnx")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"unknown device {self.device!r}; use cpu, cuda or cuda:N")
        if self.device == "cpu":
            check_cpu_precision(dtype, self.backend, cpu_flags())
        if dtype == "int8" and self.backend == "torch":
            raise ValueError("int8 is an ONNX Runtime mode: use --backend onnx --dtype int8")
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(f"max_length must be at least 8, not {self.max_length}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, not {self.threads}")

    def limits(self, family_default: int, model_positions: int) -> tuple[int, int]:
        """(max_length, query cap) for a model: asked for, else the family's, within the model's."""
        max_length = min(self.max_length or family_default, model_positions)
        return max_length, min(self.query_max_length or max_length * 3 // 4, max_length)

    @property
    def thread_count(self) -> int:
        return self.threads or len(os.sched_getaffinity(0))
