"""Does the int8 probe predict unseen text? (issue 24 item 3)

Scores the export's probe set (`quantize_probe.probe_set()`), the disjoint held-out groups
(`held_out_set()`) and the benchmark workload (the text the issue's 0.970 came from) with
fp32 ONNX, with plain int8 (dynamic, s8 per-channel, head fp32, before smoothing and fp32
fallbacks) and with the int8 file `--dtype int8` serves on this CPU, and prints Spearman against fp32 and time ratios from the same run.

    python -m bench.int8_probe_check minilm-l6 [--trained]

`--trained` first fine-tunes the fixture with `rerankd finetune`'s trainer (`bench.trained`)
and adds the task's unseen queries, where fp32 must find the relevant passage: the check for
a fixture whose weights are random (xlmr-base), where agreement would say nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench import fixtures
from bench.int8_bench import _fp32_file
from bench.trained import Recipe
from bench.workload import WorkloadSpec, make_requests

RESULTS = Path(__file__).resolve().parent / "results"


def main(name: str, trained: Recipe | None = None) -> dict[str, object]:
    from bench.profile_onnx import onnx_file
    from bench.trained import finetuned, top1, unseen_task
    from rerankd.engine import EngineOptions
    from rerankd.engine.quantize import (
        SessionBackend,
        _head_nodes,
        _quantize,
        probe_scores,
        scheme_for,
        spearman,
    )
    from rerankd.engine.quantize_probe import Group, composition, held_out_set, probe_set

    report: dict[str, object] = {"model": name, "sets": {}}
    if trained is not None:
        tuned = finetuned(trained)
        model_dir = tuned.path
        report["finetune_steps"] = tuned.steps
    else:
        model_dir = fixtures.model_dir(name)
    model, fp32 = _fp32_file(model_dir, 2)
    options = EngineOptions(backend="onnx", threads=2)
    int8 = fixtures.WORK / f"probe-check-{name}.onnx"
    _quantize(fp32, int8, scheme_for("avx512vnni"), _head_nodes(fp32))
    workload = tuple(
        (r.query, tuple(r.documents)) for r in make_requests(3, WorkloadSpec(documents=32, seed=3))
    )
    sets: dict[str, tuple[Group, ...]] = {
        "probe": probe_set(),
        "held_out": held_out_set(),
        "workload": workload,
    }
    task = unseen_task() if trained is not None else []
    if task:
        sets["keyword_task"] = tuple((r["query"], tuple(r["documents"])) for r in task)
    scores: dict[str, dict[str, np.ndarray]] = {}
    seconds: dict[str, dict[str, float]] = {}
    served = onnx_file(model_dir, "int8")  # what `--dtype int8` serves here: smoothed, probed
    for label, path in (("fp32", fp32), ("int8", int8), ("served", served)):
        backend = SessionBackend(path, 2)
        for set_name, groups in sets.items():
            started = time.perf_counter()
            scores.setdefault(set_name, {})[label] = probe_scores(model, options, backend, groups)  # type: ignore[arg-type]
            seconds.setdefault(set_name, {})[label] = time.perf_counter() - started
    for set_name, groups in sets.items():
        report["sets"][set_name] = {  # type: ignore[index]
            **composition(groups),
            "int8_spearman_vs_fp32": round(
                spearman(scores[set_name]["int8"], scores[set_name]["fp32"]), 4
            ),
            "int8_speedup": round(seconds[set_name]["fp32"] / seconds[set_name]["int8"], 2),
            "served_int8_file": served.name,
            "served_spearman_vs_fp32": round(
                spearman(scores[set_name]["served"], scores[set_name]["fp32"]), 4
            ),
            "served_speedup": round(seconds[set_name]["fp32"] / seconds[set_name]["served"], 2),
        }
        if set_name == "keyword_task":  # trained, not random: fp32 finds the relevant passage
            report["sets"][set_name]["fp32_top1_accuracy"] = top1(scores[set_name]["fp32"], task)  # type: ignore[index]
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="minilm-l6", choices=sorted(fixtures.RECIPES))
    parser.add_argument("--trained", action="store_true", help="fine-tune the fixture first")
    parser.add_argument("--queries", type=int, default=Recipe.queries, help="fine-tuning queries")
    parser.add_argument("--batch-size", type=int, default=Recipe.batch_size, help="queries a step")
    args = parser.parse_args()
    recipe = Recipe(args.model, args.queries, batch_size=args.batch_size) if args.trained else None
    out = main(args.model, recipe)
    print(json.dumps(out, indent=2))
