"""Which batch budget each backend and precision runs fastest at on this CPU (issue 24).

The same pooled requests (several clients' passages, sorted by length as the scheduler's
queue holds them) are cut by `rerankd.batching.cut_batches` at each budget and run through
the real engine (`load_engine`, the family's own collation) of each mode, modes alternated
per budget so drift hits them alike. Prints pairs/s, useful GFLOP/s and the share of the
measured fp32 GEMM ceiling; writes the table with the CPU to bench/results. The defaults in
`rerankd.engine.options.default_batch_tokens` come from this table.

    python -m bench.batch_budget [--models minilm-l6 xlmr-base] [--budgets 4096 2048 1024 512]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
THREADS = 2
MODES = {  # name: (backend, dtype)
    "onnx-fp32": ("onnx", "float32"),
    "onnx-int8": ("onnx", "int8"),
    "torch-fp32": ("torch", "float32"),
    "torch-bf16": ("torch", "bfloat16"),
}
# Requests pooled per model: four clients' worth for the small model, one for the base one
# (a base-size pass over 128 passages takes minutes on two cores).
REQUESTS = {"minilm-l6": 4, "xlmr-base": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(REQUESTS))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--budgets", nargs="+", type=int, default=[4096, 2048, 1024, 512])
    parser.add_argument("--rounds", type=int, default=2, help="best of this many passes")
    args = parser.parse_args()

    from bench import fixtures, gemm
    from bench.flops import EncoderShape
    from bench.machine import describe
    from bench.workload import make_requests
    from rerankd.batching import cut_batches
    from rerankd.engine import EngineOptions, LongDocPolicy
    from rerankd.engine.cpu import cpu_flags, has_bf16
    from rerankd.engine.engine import load_engine

    ceiling = gemm.measure(THREADS)
    peak = float(ceiling["gflops"])  # type: ignore[arg-type]
    print(f"fp32 GEMM ceiling: {peak:.1f} GFLOP/s on {THREADS} threads", flush=True)
    modes = [m for m in args.modes if MODES[m][1] != "bfloat16" or has_bf16(cpu_flags())]
    table: list[dict[str, Any]] = []
    for name in args.models:
        model_dir = fixtures.model_dir(name)
        shape = EncoderShape.from_dir(model_dir)
        engines = {}
        for mode in modes:
            backend, dtype = MODES[mode]
            if dtype == "int8" and name != "minilm-l6":
                continue  # the base fixture's random weights fail the int8 probe (see int8_bench)
            options = EngineOptions(
                backend=backend,  # type: ignore[arg-type]
                dtype=dtype,  # type: ignore[arg-type]
                threads=THREADS,
                max_length=512,
                cache_dir=fixtures.WORK / "cache" / "rerankd",
            )
            engine = load_engine(str(model_dir), options)
            if engine.served_dtype != dtype:  # refused by its accuracy probe: not this mode
                print(f"{name} {mode}: {engine.backend.description}; left out", flush=True)
                engine.close()
                continue
            engines[mode] = engine
        first = next(iter(engines.values()))
        items = [
            item
            for request in make_requests(REQUESTS.get(name, 1))
            for item in first.plan(request.query, request.documents, LongDocPolicy()).sequences
        ]
        items.sort(key=len)
        lengths = [len(item) for item in items]
        useful = shape.total(lengths)
        for budget in args.budgets:
            cuts = cut_batches(lengths, budget, 256)
            padded = sum(len(cut) * lengths[cut.stop - 1] for cut in cuts)
            row: dict[str, Any] = {
                "model": name,
                "budget": budget,
                "batches": len(cuts),
                "padding": round(padded / sum(lengths), 3),
            }
            for mode, engine in engines.items():
                engine.run(items[cuts[0].start : cuts[0].stop])  # warm at this shape
                best = float("inf")
                for _ in range(args.rounds):
                    started = time.perf_counter()
                    for cut in cuts:
                        engine.run(items[cut.start : cut.stop])
                    best = min(best, time.perf_counter() - started)
                row[mode] = round(len(items) / best, 2)
                if mode.endswith("fp32"):
                    row[f"{mode}_ceiling_share"] = round(useful / best / 1e9 / peak, 3)
            table.append(row)
            print(json.dumps(row), flush=True)
        for engine in engines.values():
            engine.close()
    out = RESULTS / f"batch_budget-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report = {"machine": describe(), "threads": THREADS, "gemm": ceiling, "rows": table}
    out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
