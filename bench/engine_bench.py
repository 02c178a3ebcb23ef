"""Issue 2's engine benchmark: pairs/s in-process, rerankd's backends vs `CrossEncoder.predict`.

Every system scores the same requests (one query + 32 passages) with 2 threads and the same
`max_length`, in one process. Requests are interleaved across systems (A B C D A B C D ...)
so that a burst of load from something else on the machine hits all of them alike.

    python -m bench.engine_bench [--models minilm-l6 xlmr-base] [--seconds 40]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import agreement, cpuload, fixtures, gemm, machine
from bench.flops import FORMULA, EncoderShape
from bench.workload import Request, WorkloadSpec, make_requests

RESULTS = Path(__file__).resolve().parent / "results"
THREADS = 2
MAX_LENGTH = 512
REFERENCE = "st-crossencoder"
RERANKD_MODES = {
    "rerankd-torch-fp32": ("torch", "float32"),
    "rerankd-onnx-fp32": ("onnx", "float32"),
    "rerankd-onnx-int8": ("onnx", "int8"),
}
# Requests per system and model: enough for a stable figure, few enough for minutes, not hours.
REQUESTS = {"minilm-l6": 8, "xlmr-base": 2}

WARMUP = WorkloadSpec(documents=8, max_words=60, seed=99)  # loads kernels, costs little
Scorer = Callable[[Request], np.ndarray]


@dataclass
class SystemResult:
    system: str
    model: str
    requests: int = 0
    pairs: int = 0
    seconds: float = 0.0
    useful_gflop: float = 0.0
    scores: list[float] = field(default_factory=list, repr=False)

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds if self.seconds else 0.0


def load_systems(model_dir: Path, cache_dir: Path, max_batch_tokens: int) -> dict[str, Scorer]:
    """The reference and rerankd's three modes, loaded (and exported) before timing starts."""
    import torch
    from sentence_transformers import CrossEncoder

    from rerankd import Reranker

    torch.set_num_threads(THREADS)
    cross_encoder = CrossEncoder(str(model_dir), max_length=MAX_LENGTH, device="cpu")
    systems: dict[str, Scorer] = {
        REFERENCE: lambda r: np.asarray(
            cross_encoder.predict(r.pairs(), batch_size=32, show_progress_bar=False), float
        )
    }
    for name, (backend, dtype) in RERANKD_MODES.items():
        reranker = Reranker(
            str(model_dir),
            backend=backend,
            dtype=dtype,
            threads=THREADS,
            max_length=MAX_LENGTH,
            cache_dir=cache_dir,
            max_batch_tokens=max_batch_tokens,
        )
        systems[name] = lambda r, reranker=reranker: reranker.score(r.pairs())
    return systems


def real_lengths(model_dir: Path, requests: list[Request]) -> list[list[int]]:
    """Each pair's token count after rerankd's (reference-equal) truncation, per request."""
    from rerankd.engine import EngineOptions, LongDocPolicy
    from rerankd.families import bind_family, resolve
    from rerankd.models import ModelSpec

    options = EngineOptions(max_length=MAX_LENGTH)
    family = bind_family(resolve(ModelSpec(str(model_dir))), options)
    return [
        [len(s) for s in family.plan(r.query, r.documents, LongDocPolicy(), None).sequences]
        for r in requests
    ]


def bench_model(
    name: str, seconds: float, cache_dir: Path, max_batch_tokens: int
) -> dict[str, object]:
    model_dir = fixtures.model_dir(name)
    timed = make_requests(REQUESTS[name])
    warmup = make_requests(1, WARMUP)[0]
    shape = EncoderShape.from_dir(model_dir)
    lengths = real_lengths(model_dir, timed)
    systems = load_systems(model_dir, cache_dir, max_batch_tokens)
    for scorer in systems.values():
        scorer(warmup)
    results = {s: SystemResult(s, name) for s in systems}
    window = cpuload.LoadWindow().start()
    for request, request_lengths in zip(timed, lengths, strict=True):
        for system, scorer in systems.items():
            result = results[system]
            if result.seconds > seconds:
                continue  # this system has used its time budget; the others catch up
            started = time.perf_counter()
            scores = scorer(request)
            result.seconds += time.perf_counter() - started
            result.requests += 1
            result.pairs += len(request.documents)
            result.useful_gflop += shape.total(request_lengths) / 1e9
            result.scores.extend(float(s) for s in scores)
    window.stop()
    return _summarize(name, results, shape, lengths, window)


def _summarize(
    name: str,
    results: dict[str, SystemResult],
    shape: EncoderShape,
    lengths: list[list[int]],
    window: cpuload.LoadWindow,
) -> dict[str, object]:
    reference = results[REFERENCE]
    fp32 = results["rerankd-torch-fp32"]
    rows = []
    for result in results.values():
        n = len(result.scores)
        rows.append(
            {
                "system": result.system,
                "requests": result.requests,
                "pairs": result.pairs,
                "seconds": round(result.seconds, 3),
                "pairs_per_s": round(result.pairs_per_s, 2),
                "speedup_vs_reference": round(result.pairs_per_s / reference.pairs_per_s, 2),
                "useful_gflops": round(result.useful_gflop / result.seconds, 2),
                "max_dev_vs_reference": agreement.max_deviation(
                    result.scores, reference.scores[:n]
                ),
                "spearman_vs_fp32": round(agreement.spearman(result.scores, fp32.scores[:n]), 4),
            }
        )
    flat = [n for request in lengths for n in request]
    padded = sum(max(request) * len(request) for request in lengths)
    return {
        "model": name,
        "layer_params": shape.layer_params,
        "real_tokens_per_pair": round(float(np.mean(flat)), 1),
        "padding_factor_per_request": round(padded / sum(flat), 2),
        "foreign_cores": round(window.foreign_cores, 2),
        "systems": rows,
    }


def print_table(report: dict[str, object]) -> None:
    ceiling = report["gemm"]["gflops"]
    print(
        f"fp32 GEMM ceiling: {ceiling} GFLOP/s on {THREADS} threads; rerankd batches of at most {report['max_batch_tokens']} padded tokens"
    )
    header = f"{'model':<10} {'system':<20} {'pairs/s':>8} {'vs CE':>6} {'GFLOP/s':>8} {'%ceil':>6} {'maxdev':>9} {'rho':>7}"
    print(header)
    for model in report["models"]:
        for row in model["systems"]:
            print(
                f"{model['model']:<10} {row['system']:<20} {row['pairs_per_s']:>8.1f} "
                f"{row['speedup_vs_reference']:>5.2f}x {row['useful_gflops']:>8.1f} "
                f"{100 * row['useful_gflops'] / ceiling:>5.0f}% {row['max_dev_vs_reference']:>9.2e} "
                f"{row['spearman_vs_fp32']:>7.4f}"
            )
        print(
            f"{'':<10} tokens/pair {model['real_tokens_per_pair']}, padding x"
            f"{model['padding_factor_per_request']}, foreign load {model['foreign_cores']} cores"
        )


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(REQUESTS))
    parser.add_argument("--seconds", type=float, default=40.0, help="time budget per system")
    parser.add_argument("--quiet-wait", type=float, default=60.0, help="max wait for an idle CPU")
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=16384,
        help="rerankd's padded-token budget per batch (16384: the Reranker default)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "engine_bench.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cache_dir = fixtures.WORK / "cache" / "rerankd"  # where the servers find it too
    for name in args.models:
        fixtures.model_dir(name)  # build outside the timed part
    foreign_before = cpuload.wait_for_quiet(args.quiet_wait)
    report = {
        "machine": machine.describe(),
        "threads": THREADS,
        "max_length": MAX_LENGTH,
        "flops_formula": FORMULA,
        "foreign_cores_before": round(foreign_before, 2),
        "gemm": gemm.measure(THREADS),
        "max_batch_tokens": args.max_batch_tokens,
        "models": [
            bench_model(name, args.seconds, cache_dir, args.max_batch_tokens)
            for name in args.models
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print_table(report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
