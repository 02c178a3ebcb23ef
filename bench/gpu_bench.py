"""GPU figures: torch fp16/bf16 against fp32, and the batch budget that keeps a GPU busy.

On the bge-reranker-base-shape fixture (XLM-R, 12 layers, hidden 768) and the same RAG-shaped
workload as the CPU benchmarks (one query + 32 passages of 20-400 words), in one process:

- pairs/s of rerankd's torch backend in fp32, fp16 and bf16 on CUDA, and each half
  precision's largest score deviation and Spearman against fp32 on the same pairs;
- pairs/s for several `max_batch_tokens` budgets (fp16), many requests at once, as the
  server's batcher would see them under load.

    python -m bench.gpu_bench [--requests 64] [--budgets 4096 8192 16384 32768 65536]

Needs a CUDA device; writes bench/results/gpu_bench.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench import fixtures
from bench.workload import WorkloadSpec, make_requests

RESULTS = Path(__file__).resolve().parent / "results"


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    rank_a = np.argsort(np.argsort(a)).astype(np.float64)
    rank_b = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(rank_a, rank_b)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="xlmr-base", choices=sorted(fixtures.RECIPES))
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--budgets", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536])
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_bench.json")
    args = parser.parse_args()

    import torch

    from rerankd.batching import run_sorted
    from rerankd.engine import EngineOptions, LongDocPolicy
    from rerankd.engine.engine import load_engine

    if not torch.cuda.is_available():
        raise SystemExit("gpu_bench needs a CUDA device")
    model = fixtures.model_dir(args.model)
    requests = make_requests(args.requests, WorkloadSpec(documents=32, seed=7))
    report: dict[str, object] = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "model": args.model,
        "requests": len(requests),
        "pairs": sum(len(r.documents) for r in requests),
    }

    def plans(engine):  # noqa: ANN001, ANN202 - a local helper
        made = [engine.plan(r.query, r.documents, LongDocPolicy()) for r in requests]
        return made, [s for p in made for s in p.sequences]

    def timed(engine, sequences, budget: int) -> tuple[np.ndarray, float]:  # noqa: ANN001
        # A whole untimed pass first: every batch shape picks its kernels once.
        run_sorted(engine.run, sequences, budget)
        torch.cuda.synchronize()
        started = time.perf_counter()
        outputs = run_sorted(engine.run, sequences, budget)
        torch.cuda.synchronize()
        return outputs, time.perf_counter() - started

    precision: dict[str, dict[str, float]] = {}
    reference: np.ndarray | None = None
    for dtype in ("float32", "float16", "bfloat16"):
        engine = load_engine(str(model), EngineOptions(device="cuda", dtype=dtype))
        _, sequences = plans(engine)
        outputs, seconds = timed(engine, sequences, 16384)
        row = {"pairs_per_s": len(sequences) / seconds, "seconds": seconds}
        if reference is None:
            reference = outputs
            row["score_std"] = float(np.std(outputs))
        else:
            row["pearson_vs_fp32"] = float(np.corrcoef(outputs, reference)[0, 1])
            row["max_abs_deviation"] = float(np.max(np.abs(outputs - reference)))
            row["spearman_vs_fp32"] = _spearman(outputs, reference)
        precision[dtype] = row
        print(dtype, json.dumps(row), flush=True)
        engine.close()
        del engine
        torch.cuda.empty_cache()
    report["precision"] = precision

    budgets: dict[str, dict[str, float]] = {}
    engine = load_engine(str(model), EngineOptions(device="cuda", dtype="float16"))
    _, sequences = plans(engine)
    real = sum(len(s) for s in sequences)
    for budget in args.budgets:
        _, seconds = timed(engine, sequences, budget)
        budgets[str(budget)] = {"pairs_per_s": len(sequences) / seconds, "seconds": seconds}
        print("budget", budget, json.dumps(budgets[str(budget)]), flush=True)
    report["budgets_fp16"] = budgets
    report["real_tokens"] = real
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
