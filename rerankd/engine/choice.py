"""`--backend auto`: on a CPU, the faster fp32 backend for this model, measured once.

Which fp32 backend is faster is a property of the CPU and the model, not a constant: at each
backend's own batch budget ONNX Runtime led torch by 1.24-1.31x on an AMD EPYC (Zen 4) and by
only 1.07-1.09x on an Intel Xeon with AMX (oneDNN's kernels), and torch led there at
XLM-R-base size (docs/benchmarks.md). So `auto` applies the rules that need no measuring
(GPUs, int8 and bf16, families without an export) and otherwise times both on the same
batches of mixed-length pairs, once: ONNX Runtime unless torch is faster by more than
`MARGIN`. The winner is kept and served (the weights are not loaded twice); the result is
written next to the model's ONNX export, named for the CPU class and thread count and checked
against the library versions, so later starts read it instead of measuring again.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rerankd.documents import TextDocument
from rerankd.engine.backend import Backend
from rerankd.engine.cpu import cpu_flags
from rerankd.engine.options import BackendName, EngineOptions, default_batch_tokens
from rerankd.engine.plan import LongDocPolicy
from rerankd.models import ResolvedModel

if TYPE_CHECKING:
    from collections.abc import Callable

    from rerankd.families import ModelFamily

logger = logging.getLogger(__name__)

ChosenBy = Literal["asked", "rule", "measured", "record"]
RECORD_FORMAT = 2  # 2: each backend timed at its own batch budget
MARGIN = 0.05  # torch must be this much faster to be chosen over ONNX Runtime
WORKLOAD_GROUPS = 2  # generated probe groups: ~26 pairs, 10 to 400 words, six languages
MIN_ROUNDS = 3
SERVER_BATCH_SIZE = 256  # the server's --max-batch-size default
BUDGET_SECONDS = 30.0  # past this, stop after the round running (at least one each)


@dataclass(frozen=True)
class BackendChoice:
    """What `auto` chose and why; shown by /info, `GET /v1/models/{uid}` and the start-up log."""

    backend: BackendName
    by: ChosenBy
    why: str
    pairs_per_s: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        if not self.pairs_per_s:
            return f"{self.backend} ({self.by}: {self.why})"
        rates = ", ".join(f"{name} {rate:.1f}" for name, rate in self.pairs_per_s.items())
        return f"{self.backend} ({self.by}: {rates} pairs/s; {self.why})"


@dataclass(frozen=True)
class Measured:
    """The backend `auto` timed and chose, still open, with the family bound for it."""

    family: ModelFamily
    backend: Backend


def choose_backend(
    model: ResolvedModel,
    options: EngineOptions,
    family: ModelFamily,
    progress: Callable[[str], None] | None = None,
) -> tuple[BackendChoice, Measured | None]:
    """The backend `options` runs with: as asked, by rule, or the faster one measured here;
    when measured, the winner too, ready to serve (the caller owns it)."""
    if options.backend != "auto":
        return BackendChoice(options.backend, "asked", "--backend"), None
    rule = _by_rule(options, family)
    if rule is not None:
        return rule, None
    path = record_path(model, options)
    recorded = _read(path)
    if recorded is not None:
        return recorded, None
    if progress:
        progress("measuring torch and ONNX Runtime on this CPU (once per model and CPU class)")
    try:
        rates, runs = _measure(model, options, progress)
    except Exception as exc:  # noqa: BLE001 - torch still serves; the next start tries again
        logger.warning(
            "backend auto: ONNX Runtime failed for %s, serving torch", model.name, exc_info=True
        )
        return BackendChoice("torch", "rule", f"the ONNX export or run failed: {exc}"), None
    choice = _decide(rates)
    for name, run in runs.items():
        if name != choice.backend:
            run.backend.close()
    try:
        _write(path, choice)
    except OSError as exc:  # e.g. a read-only shared cache: serve anyway, measure next start
        logger.warning("backend auto: could not record the choice in %s: %s", path, exc)
    return replace(choice, by="measured"), runs[choice.backend]


def _by_rule(options: EngineOptions, family: ModelFamily) -> BackendChoice | None:
    if options.device != "cpu":
        return BackendChoice("torch", "rule", "ONNX Runtime's fast path is for CPUs")
    if options.dtype == "int8":
        return BackendChoice("onnx", "rule", "int8 is an ONNX Runtime mode")
    if options.dtype == "bfloat16":
        return BackendChoice("torch", "rule", "bfloat16 is a torch mode")
    if family.onnx_refusal:
        return BackendChoice("torch", "rule", f"no ONNX export: {family.onnx_refusal}")
    return None


def _decide(rates: dict[str, float]) -> BackendChoice:
    if rates["torch"] > rates["onnx"] * (1 + MARGIN):
        why = f"torch faster by more than {MARGIN:.0%}"
        return BackendChoice("torch", "measured", why, rates)
    return BackendChoice("onnx", "measured", f"torch not faster by {MARGIN:.0%}", rates)


# Measuring ---------------------------------------------------------------------------------


def workload(family: ModelFamily, backend: BackendName) -> list[list[Any]]:
    """Length-sorted batches of the family's own items, cut as the CPU scheduler would cut
    them for `backend` (each backend at its own default batch budget)."""
    from rerankd.engine.quantize_probe import PROBE_SEED, traffic

    items: list[Any] = []
    for query, passages in traffic(PROBE_SEED + 1, WORKLOAD_GROUPS):
        plan = family.plan_documents(
            TextDocument(query),
            [TextDocument(p) for p in passages],
            LongDocPolicy(),
            family.instruction_for(None),
        )
        items.extend(plan.sequences)
    from rerankd.batching import cut_batches  # the scheduler's own cut (lazily: it is above)

    items.sort(key=len)
    lengths = [len(item) for item in items]
    ranges = cut_batches(lengths, default_batch_tokens("cpu", backend), SERVER_BATCH_SIZE)
    return [items[r.start : r.stop] for r in ranges]


def _measure(
    model: ResolvedModel, options: EngineOptions, progress: Callable[[str], None] | None
) -> tuple[dict[str, float], dict[BackendName, Measured]]:
    """Pairs per second of each backend on the same pairs, as each would serve them (torch
    with the family's shared instruction prefix where its head can run one), and both
    backends, open: the caller keeps one and closes the other. On an error both are closed."""
    from rerankd.engine.onnx_backend import OnnxBackend
    from rerankd.engine.torch_backend import TorchBackend
    from rerankd.families import bind_family

    runs: dict[BackendName, Measured] = {}
    try:
        torch_options = replace(options, backend="torch")
        torch_family = bind_family(model, torch_options)
        torch_backend = TorchBackend(torch_options, torch_family)
        torch_family.share_prefix = options.share_prefix and torch_backend.shares_prefix
        runs["torch"] = Measured(torch_family, torch_backend)
        onnx_options = replace(options, backend="onnx")
        onnx_family = bind_family(model, onnx_options)
        runs["onnx"] = Measured(
            onnx_family, OnnxBackend(model, onnx_options, onnx_family, progress)
        )
        batches = {name: workload(run.family, name) for name, run in runs.items()}
        for name, run in runs.items():  # warm: first-run allocations, kernels
            run.family.run(run.backend.run, batches[name][0][:2])
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        started = time.perf_counter()
        while len(seconds["onnx"]) < MIN_ROUNDS and (
            not seconds["onnx"] or time.perf_counter() - started < BUDGET_SECONDS
        ):
            for name, run in runs.items():  # alternated: drift hits both
                began = time.perf_counter()
                for batch in batches[name]:
                    run.family.run(run.backend.run, batch)
                seconds[name].append(time.perf_counter() - began)
    except BaseException:
        for run in runs.values():
            run.backend.close()
        raise
    pairs = sum(len(batch) for batch in batches["onnx"])
    rates = {name: round(pairs / statistics.median(times), 2) for name, times in seconds.items()}
    return rates, runs


# The record ----------------------------------------------------------------------------------


def record_path(model: ResolvedModel, options: EngineOptions) -> Path:
    """Beside the model's ONNX export (keyed by its weights and settings), per CPU class and
    thread count: a cache copied to another machine measures again."""
    from rerankd.engine.onnx_backend import cache_entry
    from rerankd.engine.quantize import isa_class

    isa = isa_class(cpu_flags())
    return cache_entry(model, options) / f"backend-{isa}-{options.thread_count}t.json"


def _versions() -> dict[str, str]:
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def _read(path: Path) -> BackendChoice | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != RECORD_FORMAT or data.get("versions") != _versions():
            return None  # another library version may change the answer: measure again
        choice = data["choice"]
        return BackendChoice(choice["backend"], "record", choice["why"], choice["pairs_per_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write(path: Path, choice: BackendChoice) -> None:
    data = {
        "format": RECORD_FORMAT,
        "versions": _versions(),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "choice": asdict(choice),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # workers may race
    temporary.write_text(json.dumps(data, indent=2), encoding="utf-8")
    temporary.replace(path)
