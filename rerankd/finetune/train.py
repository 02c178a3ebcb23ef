"""Fine-tune a cross-encoder with sentence-transformers' `CrossEncoderTrainer`.

The trainer brings checkpoints, resume, seeding, mixed precision and the progress display;
this module builds the dataset for the chosen loss, measures the evaluation split with the
same metrics `rerankd eval` reports (before training, during it, and after), and saves a
directory `rerankd serve --model DIR` loads as it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerankd.evaluation.data import EvalSet
from rerankd.evaluation.metrics import mean_metrics, run_from_scores
from rerankd.finetune.data import TrainSet

LOSSES = ("listnet", "bce")


@dataclass(frozen=True)
class TrainOptions:
    epochs: float = 1.0
    batch_size: int = 8  # queries per step (listnet) or pairs per step (bce)
    learning_rate: float = 2e-5
    loss: str = "listnet"
    max_length: int = 256
    seed: int = 12
    device: str = "cpu"
    precision: str = "auto"  # fp32 on CPU; bf16 (or fp16 where bf16 is missing) on CUDA
    save_steps: int = 500
    eval_steps: int | None = None  # default: once per epoch
    warmup_ratio: float = 0.1
    resume: bool = False
    threads: int | None = None  # torch CPU threads; None: all cores
    metrics: tuple[str, ...] = ("ndcg@10", "mrr@10", "map", "recall@10")

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; use {' or '.join(LOSSES)}")
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise ValueError(f"unknown precision {self.precision!r}; use auto, fp32, fp16 or bf16")
        if self.precision in ("fp16", "bf16") and not self.device.startswith("cuda"):
            raise ValueError(f"{self.precision} training needs a CUDA device (--device cuda)")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be at least 1")
        if self.epochs <= 0 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("epochs, batch size and learning rate must be positive")


@dataclass
class FinetuneResult:
    output: Path
    steps: int
    seconds: float
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0


def measure(model: Any, eval_set: EvalSet, metrics: tuple[str, ...]) -> dict[str, float]:
    """The eval split scored by a sentence-transformers `CrossEncoder`, measured as `rerankd eval` does."""
    pairs = [(q.text, d) for q in eval_set.queries for d in q.documents]
    flat = model.predict(pairs, batch_size=64, show_progress_bar=False)
    scores, start = [], 0
    for query in eval_set.queries:
        scores.append(flat[start : start + len(query.documents)])
        start += len(query.documents)
    run = run_from_scores(
        [q.doc_ids for q in eval_set.queries], [q.id for q in eval_set.queries], scores
    )
    return mean_metrics(eval_set.qrels, run, metrics)


def build_dataset(train: TrainSet, loss: str) -> Any:
    """listnet: one row per query with all its passages; bce: one row per (query, passage)."""
    from datasets import Dataset

    if loss == "listnet":
        return Dataset.from_dict(
            {
                "query": [q.query for q in train.queries],
                "docs": [q.positives + q.negatives for q in train.queries],
                "labels": [
                    [1.0] * len(q.positives) + [0.0] * len(q.negatives) for q in train.queries
                ],
            }
        )
    rows: dict[str, list[Any]] = {"query": [], "passage": [], "label": []}
    for q in train.queries:
        for text, label in [(p, 1.0) for p in q.positives] + [(n, 0.0) for n in q.negatives]:
            rows["query"].append(q.query)
            rows["passage"].append(text)
            rows["label"].append(label)
    return Dataset.from_dict(rows)


def _evaluator(eval_set: EvalSet, metrics: tuple[str, ...]) -> Any:
    import importlib

    try:
        base = importlib.import_module("sentence_transformers.base.evaluation").BaseEvaluator
    except ImportError:  # sentence-transformers < 6
        base = importlib.import_module("sentence_transformers.evaluation").SentenceEvaluator
    BaseEvaluator: Any = base

    class MetricsEvaluator(BaseEvaluator):  # untyped across versions
        """The eval split, with `rerankd eval`'s metrics, at every evaluation step."""

        def __init__(self) -> None:
            super().__init__()
            self.primary_metric = "mrr@10" if "mrr@10" in metrics else metrics[0]

        def __call__(
            self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1
        ) -> dict[str, float]:
            return measure(model, eval_set, metrics)

    return MetricsEvaluator()


def _precision(options: TrainOptions) -> dict[str, Any]:
    if not options.device.startswith("cuda") or options.precision == "fp32":
        return {}
    if options.precision == "auto":
        import torch

        return {"bf16": True} if torch.cuda.is_bf16_supported() else {"fp16": True}
    return {options.precision: True}


def finetune(
    base: Path,
    train: TrainSet,
    output: Path,
    options: TrainOptions,
    eval_set: EvalSet | None = None,
) -> FinetuneResult:
    """Train `base` (a resolved model directory) on `train` and save the result into `output`."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder import (
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, ListNetLoss
    from transformers import set_seed

    if options.threads is not None:
        import torch

        torch.set_num_threads(options.threads)
    set_seed(options.seed)
    model = CrossEncoder(
        str(base), num_labels=1, max_length=options.max_length, device=options.device
    )
    before = measure(model, eval_set, options.metrics) if eval_set else {}
    dataset = build_dataset(train, options.loss)
    loss = ListNetLoss(model) if options.loss == "listnet" else BinaryCrossEntropyLoss(model)
    steps_per_epoch = -(-len(dataset) // options.batch_size)
    total = max(1, int(steps_per_epoch * options.epochs))
    evaluating = eval_set is not None
    args = CrossEncoderTrainingArguments(
        output_dir=str(output / "checkpoints"),
        num_train_epochs=options.epochs,
        per_device_train_batch_size=options.batch_size,
        learning_rate=options.learning_rate,
        warmup_steps=int(total * options.warmup_ratio),
        seed=options.seed,
        data_seed=options.seed,
        use_cpu=options.device == "cpu",
        save_strategy="steps",
        save_steps=options.save_steps,
        save_total_limit=2,
        eval_strategy=("steps" if options.eval_steps else "epoch") if evaluating else "no",
        eval_steps=options.eval_steps,
        logging_steps=max(1, total // 20),
        report_to="none",
        dataloader_num_workers=0,
        **_precision(options),
    )
    trainer = CrossEncoderTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=loss,
        evaluator=_evaluator(eval_set, options.metrics) if eval_set else None,
    )
    started = time.perf_counter()
    state = trainer.train(resume_from_checkpoint=True if options.resume else None)
    seconds = time.perf_counter() - started
    after = measure(model, eval_set, options.metrics) if eval_set else {}
    model.save_pretrained(str(output))
    return FinetuneResult(output, int(state.global_step), seconds, before, after)
