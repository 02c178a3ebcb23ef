"""The model card (README.md) written next to the fine-tuned weights."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from rerankd.finetune.data import TrainSet
from rerankd.finetune.train import FinetuneResult, TrainOptions

SUMMARY = "rerankd-finetune.json"  # the card's facts, for scripts


def write_card(
    result: FinetuneResult,
    *,
    base: str,
    train: TrainSet,
    data_path: Path,
    eval_path: Path | None,
    options: TrainOptions,
    mined: int,
) -> Path:
    negatives = sum(len(q.negatives) for q in train.queries)
    positives = sum(len(q.positives) for q in train.queries)
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: text-ranking",
        "tags: [cross-encoder, reranker, rerankd]",
        f"base_model: {base}",
        "---",
        "",
        f"# {result.output.name}",
        "",
        f"A cross-encoder reranker fine-tuned from `{base}` with `rerankd finetune` "
        f"on {datetime.date.today().isoformat()}.",
        "",
        "## Data",
        "",
        f"- training: `{data_path.name}`: {len(train.queries)} queries, {positives} positive "
        f"and {negatives} negative passages ({mined} negatives mined with a bi-encoder)",
        f"- evaluation: `{eval_path.name}`" if eval_path else "- evaluation: none given",
        "",
        "## Training",
        "",
        f"- loss: {options.loss}; epochs: {options.epochs:g}; batch size: {options.batch_size}; "
        f"learning rate: {options.learning_rate:g}; max length: {options.max_length}; "
        f"seed: {options.seed}",
        f"- {result.steps} steps in {result.seconds:.1f} s on {options.device}",
        "",
    ]
    if result.before:
        lines += ["## Evaluation", "", "| metric | before | after |", "|---|---:|---:|"]
        lines += [
            f"| {m} | {result.before[m]:.4f} | {result.after[m]:.4f} |" for m in result.before
        ]
        lines.append("")
    lines += [
        "## Use",
        "",
        "```bash",
        f"rerankd serve --model {result.output}",
        "```",
        "",
        "Scores equal sentence-transformers' `CrossEncoder(DIR).predict` (sigmoid of the logit).",
        "",
    ]
    path = result.output / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    summary = {
        "base_model": base,
        "data": str(data_path),
        "eval": str(eval_path) if eval_path else None,
        "loss": options.loss,
        "epochs": options.epochs,
        "seed": options.seed,
        "steps": result.steps,
        "seconds": round(result.seconds, 3),
        "steps_per_second": round(result.steps_per_second, 3),
        "negatives_mined": mined,
        "before": result.before,
        "after": result.after,
    }
    (result.output / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return path
