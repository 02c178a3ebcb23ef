"""Half precision against fp32 on trained weights, not random ones (issue 24).

Random weights score every pair about alike, so their rank agreement says nothing (fp16 vs
fp32 Pearson 0.52 on the random base-size fixture). This fine-tunes the MiniLM-L6 fixture with
`rerankd finetune`'s trainer on a synthetic keyword task (the weights then separate relevant
from irrelevant passages), then scores the held-out probe groups (`quantize_probe.held_out_set`:
six languages, long and short, near-duplicates and ties) and unseen queries of the task (where
fp32 must find the relevant passage: proof the weights are trained) with the fine-tuned
model's torch head in fp32, bf16 and fp16, batched as served, and prints Spearman and the largest
deviation of normalized scores against fp32.

    python -m bench.half_agreement [--device cpu|cuda] [--groups 18]

On a CPU, bf16 runs on AVX512_BF16/AMX units and fp16 in software; on a GPU both run on
tensor cores with fp32 accumulation: run it there where a GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--groups", type=int, default=18, help="held-out groups to score")
    parser.add_argument("--queries", type=int, default=800, help="fine-tuning queries")
    args = parser.parse_args()

    import numpy as np
    import torch

    from bench.machine import describe
    from bench.trained import Recipe, finetuned, top1, unseen_task
    from rerankd.engine import EngineOptions
    from rerankd.engine.options import default_batch_tokens
    from rerankd.engine.quantize import score_groups, spearman
    from rerankd.engine.quantize_probe import Group, held_out_set
    from rerankd.families import bind_family, resolve
    from rerankd.models import ModelSpec

    torch.set_num_threads(2)
    trained = finetuned(Recipe("minilm-l6", queries=args.queries))
    print(f"fine-tuned {trained.steps} steps in {trained.seconds:.0f} s", flush=True)

    family = bind_family(resolve(ModelSpec(str(trained.path))), EngineOptions(threads=2))
    unseen = unseen_task()
    task = tuple((r["query"], tuple(r["documents"])) for r in unseen)
    sets = {"held_out": held_out_set()[: args.groups], "keyword_task": task}
    device = torch.device(args.device)
    budget = default_batch_tokens(args.device, "torch", "float32")

    def scores(dtype: torch.dtype, groups: tuple[Group, ...]) -> tuple[np.ndarray, float]:
        head = family.torch_head(dtype, "sdpa").eval().to(device)
        names = family.input_names

        def run(batch: object) -> np.ndarray:
            inputs = {
                name: torch.from_numpy(array).to(device)
                for name, array in batch.inputs(names).items()  # type: ignore[attr-defined]
            }
            with torch.inference_mode():
                return np.asarray(head(**inputs).float().cpu().numpy())

        started = time.perf_counter()
        out = score_groups(family, run, groups, budget)
        return out, time.perf_counter() - started

    report: dict[str, object] = {
        "machine": describe(),
        "device": args.device,
        "model": "minilm-l6 fixture fine-tuned with rerankd finetune's trainer (keyword task)",
        "finetune_steps": trained.steps,
    }
    for label, groups in sets.items():
        reference, fp32_seconds = scores(torch.float32, groups)
        rows: dict[str, object] = {
            "pairs": len(reference),
            "fp32_score_spread": round(float(np.std(reference)), 4),
            "float32_seconds": round(fp32_seconds, 2),
        }
        if label == "keyword_task":  # trained, not random: it finds the relevant passage
            rows["fp32_top1_accuracy"] = top1(reference, unseen)
        for name, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
            mine, seconds = scores(dtype, groups)
            rows[name] = {
                "spearman_vs_fp32": round(spearman(mine, reference), 5),
                "max_deviation": round(float(np.max(np.abs(mine - reference))), 5),
                "seconds": round(seconds, 2),
            }
        report[label] = rows
        print(label, json.dumps(rows), flush=True)
    out = RESULTS / f"half_agreement-{args.device.replace(':', '')}.json"
    out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
