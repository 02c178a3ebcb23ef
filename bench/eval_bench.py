"""Issue 15: `rerankd eval` throughput, `rerankd finetune` steps/s, and an agreement report.

    python -m bench.eval_bench                 # all three, results in bench/results/eval_bench.json
    python -m bench.eval_bench --queries 8     # fewer queries (100 candidates each) on a busy machine
    python -m bench.eval_bench --threads 1     # one thread per model: on an oversubscribed machine,
                                               # two OpenMP threads per process run far slower
    python -m bench.eval_bench --only finetune # one part; the others keep their last results

1. Evaluation throughput: queries/s (100 candidates each) through `rerankd eval`'s scoring
   loop, in process, on the MiniLM-L6-size fixture (`bench.fixtures`), ONNX fp32 and int8.
2. Fine-tuning: steps/s of `rerankd finetune`'s trainer (listwise loss, 8 queries x 10
   passages a step) on the tiny test model and on the MiniLM-L6-size fixture.
3. Agreement: the MiniLM-L6 fixture in torch fp32 vs ONNX int8 on a generated set, as
   `rerankd eval --mode torch --mode onnx:int8` reports it (Spearman, largest deviation).

The fixture's weights are not trained for relevance (its encoder is all-MiniLM-L6-v2 with a
new head), so the metrics themselves mean little; the speed and the agreement do.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench.fixtures import model_dir
from bench.machine import describe

RESULTS = Path(__file__).resolve().parent / "results" / "eval_bench.json"
METRICS = ["ndcg@10", "mrr@10", "map", "recall@10"]


def _eval_set(queries: int, candidates: int, seed: int):  # type: ignore[no-untyped-def]
    from rerankd.evaluation.data import read_rerankd_jsonl
    from rerankd.evaluation.synthetic import keyword_task, write_jsonl

    path = Path(tempfile.mkdtemp(prefix="eval-bench-")) / "keywords.jsonl"
    write_jsonl(keyword_task(queries, candidates=candidates, hard=3, seed=seed), path)
    return read_rerankd_jsonl(path)


def eval_throughput(queries: int, threads: int | None) -> dict[str, object]:
    """Queries/s of the scoring loop, 100 candidates a query, after one warm-up query."""
    from rerankd.evaluation.runner import agreements, baseline, score_all
    from rerankd.evaluation.scorers import LocalScorer, Mode, ModelRun

    data = _eval_set(queries, 100, seed=7)
    warm = _eval_set(1, 100, seed=8)
    model = str(model_dir("minilm-l6"))
    rows = {}
    results = [baseline(data, METRICS)]
    for mode in (Mode("onnx", "float32"), Mode("onnx", "int8")):
        scorer = LocalScorer(ModelRun(model, mode), max_length=256, threads=threads)
        score_all(warm, scorer, METRICS, lambda n: None)
        result = score_all(data, scorer, METRICS, lambda n: None)
        results.append(result)
        rows[str(mode)] = {
            "queries": result.queries,
            "seconds": round(result.seconds, 2),
            "queries_per_second": round(result.queries_per_second, 3),
            "pairs_per_second": round(result.queries_per_second * 100, 1),
        }
    rows["int8_vs_fp32"] = agreements(results)[0].as_dict()
    return rows


def agreement_report(queries: int, threads: int | None) -> dict[str, object]:
    """torch fp32 vs ONNX int8 on the MiniLM-L6 fixture: metrics side by side and agreement."""
    from rerankd.evaluation.runner import agreements, baseline, score_all
    from rerankd.evaluation.scorers import LocalScorer, Mode, ModelRun

    data = _eval_set(queries, 20, seed=11)
    model = str(model_dir("minilm-l6"))
    results = [baseline(data, METRICS)]
    for mode in (Mode("torch", "float32"), Mode("onnx", "int8")):
        results.append(
            score_all(
                data,
                LocalScorer(ModelRun(model, mode), max_length=256, threads=threads),
                METRICS,
                lambda n: None,
            )
        )
    return {
        "queries": len(data.queries),
        "candidates": 20,
        "metrics": {r.label: r.metrics for r in results},
        "agreement": agreements(results)[0].as_dict(),
    }


def finetune_speed(steps: int, threads: int | None) -> dict[str, object]:
    """Steps/s of the trainer, 8 queries x 10 passages a step, on CPU with all cores."""
    from bench.trained import keyword_train_set
    from rerankd.devtools.synthetic import build_bert_cross_encoder
    from rerankd.finetune.train import TrainOptions, finetune

    train = keyword_train_set(8 * steps, seed=5, hard=1)
    work = Path(tempfile.mkdtemp(prefix="finetune-bench-"))
    tiny = build_bert_cross_encoder(work / "tiny", hidden_size=64, layers=2, initializer_range=0.02)
    out = {}
    for name, base in (("tiny (hidden 64, 2 layers)", tiny), ("minilm-l6", model_dir("minilm-l6"))):
        options = TrainOptions(
            epochs=1, batch_size=8, learning_rate=1e-4, save_steps=10_000, threads=threads
        )
        result = finetune(base, train, work / f"out-{len(out)}", options)
        out[name] = {
            "steps": result.steps,
            "seconds": round(result.seconds, 2),
            "steps_per_second": round(result.steps_per_second, 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=20, help="queries for the throughput figure")
    parser.add_argument("--agreement-queries", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20, help="fine-tuning steps per model")
    parser.add_argument(
        "--threads", type=int, default=None, help="threads per model (default: all cores)"
    )
    parser.add_argument("--only", choices=["throughput", "agreement", "finetune"], default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parts = {
        "eval_throughput": lambda: eval_throughput(args.queries, args.threads),
        "agreement_torch_fp32_vs_onnx_int8": lambda: agreement_report(
            args.agreement_queries, args.threads
        ),
        "finetune": lambda: finetune_speed(args.steps, args.threads),
    }
    names = {
        "throughput": "eval_throughput",
        "agreement": "agreement_torch_fp32_vs_onnx_int8",
        "finetune": "finetune",
    }
    report = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    report["machine"] = describe()
    for key, part in parts.items():
        if args.only is not None and names[args.only] != key:
            continue
        started, load = time.time(), os.getloadavg()
        result = part()
        result["threads"] = args.threads or len(os.sched_getaffinity(0))
        result["load_average_before_after"] = [round(load[0], 1), round(os.getloadavg()[0], 1)]
        result["wall_seconds"] = round(time.time() - started, 1)
        report[key] = result
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(json.dumps({key: result}, indent=2), flush=True)


if __name__ == "__main__":
    main()
