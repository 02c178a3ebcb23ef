"""Issue 11's int8 benchmark: int8 schemes against ONNX fp32, interleaved in one process.

For each model: the fp32 export; the int8 file `rerankd.engine.quantize` builds for this CPU
(its scheme, smoothing, sensitivity check and probe; forced, so it exists even where the probe
refuses it); and, to attribute the gains, plain s8 and plain u8 weights (per channel, head in
fp32, no smoothing, nothing else kept in fp32; u8 plain is the scheme rerankd used before).
Requests are scored round-robin (fp32, int8-a, int8-b, fp32, ...) so load from other work on
the machine hits every variant alike; figures are ratios to fp32 from the same run.
Spearman is against fp32 on the benchmark's own pairs (pooled over requests).

    python -m bench.int8_bench [--models minilm-l6 xlmr-base] [--requests 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from bench import fixtures
from bench.workload import WorkloadSpec, make_requests

RESULTS = Path(__file__).resolve().parent / "results"
MAX_BATCH_TOKENS = 512  # ONNX Runtime's CPU default (rerankd.engine.options)
CACHE = fixtures.WORK / "cache"


def _fp32_file(model_dir: Path, threads: int) -> tuple[object, Path]:
    from rerankd.engine import EngineOptions
    from rerankd.engine.onnx_backend import ensure_exported
    from rerankd.families import resolve
    from rerankd.models import ModelSpec

    resolved = resolve(ModelSpec.parse(str(model_dir)))
    options = EngineOptions(
        backend="onnx", dtype="float32", threads=threads, cache_dir=CACHE / "rerankd"
    )
    return resolved, ensure_exported(resolved, options)


def build_variants(name: str, threads: int, work: Path) -> tuple[object, dict[str, Path], dict]:
    """fp32, the tuned int8 (forced, so it exists even if its probe refuses it), the other type."""
    from rerankd.engine import EngineOptions
    from rerankd.engine.quantize import (
        _head_nodes,
        _quantize,
        cpu_flags,
        isa_class,
        quantize_checked,
        read_record,
        scheme_for,
    )

    model, fp32 = _fp32_file(fixtures.model_dir(name), threads)
    entry = work / name
    shutil.rmtree(entry, ignore_errors=True)
    entry.mkdir(parents=True)
    shutil.copy(fp32, entry / "model.onnx")
    options = EngineOptions(backend="onnx", dtype="int8", threads=threads, force_int8=True)
    scheme = scheme_for(isa_class(cpu_flags()))
    tuned = entry / f"model.int8-{scheme.isa}.onnx"
    started = time.perf_counter()
    quantize_checked(model, options, entry / "model.onnx", tuned, print)
    record = read_record(entry, scheme.isa)
    variants = {"fp32": entry / "model.onnx", f"int8-{scheme.weights}-tuned": tuned}
    for weights, isa in (("s8", "avx512vnni"), ("u8", "avx2")):
        plain = entry / f"model.int8-{weights}-plain.onnx"  # no smoothing, nothing kept fp32
        _quantize(entry / "model.onnx", plain, scheme_for(isa), _head_nodes(entry / "model.onnx"))
        variants[f"int8-{weights}-plain"] = plain
    info = {
        "tuning_seconds": round(time.perf_counter() - started, 1),
        "record": record.summary() if record else None,
        "kept_fp32": record.kept_fp32 if record else None,
    }
    return model, variants, info


def measure(name: str, requests: int, threads: int, work: Path) -> dict[str, object]:
    from rerankd.batching import run_sorted
    from rerankd.engine import EngineOptions, LongDocPolicy
    from rerankd.engine.choice import BackendChoice
    from rerankd.engine.engine import Engine
    from rerankd.engine.quantize import SessionBackend, spearman
    from rerankd.families import bind_family

    model, variants, info = build_variants(name, threads, work)
    options = EngineOptions(backend="onnx", threads=threads)
    asked = BackendChoice("onnx", "asked", "--backend")
    engines = {
        label: Engine(
            model, options, bind_family(model, options), SessionBackend(path, threads), asked
        )
        for label, path in variants.items()
    }
    workload = make_requests(requests, WorkloadSpec(documents=32, seed=3))
    seconds = dict.fromkeys(engines, 0.0)
    scores: dict[str, list[np.ndarray]] = {label: [] for label in engines}
    pairs = 0
    for warm in make_requests(1, WorkloadSpec(documents=8, max_words=60, seed=99)):
        for engine in engines.values():
            plan = engine.plan(warm.query, warm.documents, LongDocPolicy())
            run_sorted(engine.run, plan.sequences, MAX_BATCH_TOKENS)
    for request in workload:
        pairs += len(request.documents)
        for label, engine in engines.items():
            plan = engine.plan(request.query, request.documents, LongDocPolicy())
            started = time.perf_counter()
            outputs = run_sorted(engine.run, plan.sequences, MAX_BATCH_TOKENS)
            seconds[label] += time.perf_counter() - started
            scores[label].append(plan.combine(outputs))
    reference = np.concatenate(scores["fp32"])
    out: dict[str, object] = {"model": name, "pairs": pairs, **info, "variants": {}}
    for label in engines:
        mine = np.concatenate(scores[label])
        out["variants"][label] = {  # type: ignore[index]
            "pairs_per_s": round(pairs / seconds[label], 2),
            "speedup_vs_fp32": round(seconds["fp32"] / seconds[label], 3),
            "spearman_vs_fp32": round(spearman(mine, reference), 4),
            "max_abs_logit_diff": round(float(np.max(np.abs(mine - reference))), 4),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["minilm-l6", "xlmr-base"])
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from rerankd.engine.quantize import cpu_flags, isa_class

    work = fixtures.WORK / "int8"
    flags = cpu_flags()
    report = {"isa": isa_class(flags), "cpu_flags": sorted(flags), "results": []}
    for name in args.models:
        result = measure(name, args.requests, args.threads, work)
        print(json.dumps(result, indent=2), flush=True)
        report["results"].append(result)  # type: ignore[attr-defined]
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"int8_bench-{'-'.join(args.models)}.json"
    out.write_text(json.dumps(report, indent=2) + "\n", "utf-8")


if __name__ == "__main__":
    main()
