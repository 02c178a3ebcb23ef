"""A benchmark fixture fine-tuned with `rerankd finetune`'s trainer, cached (issue 24).

Checks of precision against fp32 need trained weights: random ones score every pair about
alike, so their rank agreement says nothing (int8 Spearman 0.20, fp16 Pearson 0.52 on the
random base-size fixture). This trains a fixture on the synthetic keyword task; the task's
unseen queries (`unseen_task`, scored with `top1`) show that the weights learnt it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench import fixtures

if TYPE_CHECKING:
    from rerankd.finetune.data import TrainSet


@dataclass(frozen=True)
class Recipe:
    """How a fixture is fine-tuned; a changed recipe trains a new directory."""

    model: str
    queries: int = 800
    learning_rate: float = 2e-4
    batch_size: int = 8
    seed: int = 7

    @property
    def key(self) -> str:
        revision = fixtures.RECIPES[self.model].revision
        return f"{self.model}-r{revision}-q{self.queries}-lr{self.learning_rate:g}-s{self.seed}"


@dataclass(frozen=True)
class Trained:
    path: Path
    steps: int
    seconds: float


def finetuned(recipe: Recipe) -> Trained:
    """The fine-tuned copy of `recipe.model`, trained first if it is not cached."""
    out = fixtures.WORK / "trained" / recipe.key
    marker = out / "bench-trained.json"
    if marker.is_file():
        saved = json.loads(marker.read_text(encoding="utf-8"))
        return Trained(out, int(saved["steps"]), float(saved["seconds"]))

    from rerankd.finetune.train import TrainOptions, finetune

    options = TrainOptions(
        epochs=1, batch_size=recipe.batch_size, learning_rate=recipe.learning_rate, threads=2
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        built = Path(tmp) / "model"
        trained = finetune(
            fixtures.model_dir(recipe.model),
            keyword_train_set(recipe.queries, recipe.seed, hard=2),
            built,
            options,
        )
        shutil.rmtree(built / "checkpoints", ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(built, out)
    marker.write_text(
        json.dumps({**asdict(recipe), "steps": trained.steps, "seconds": trained.seconds}),
        encoding="utf-8",
    )
    return Trained(out, trained.steps, trained.seconds)


def keyword_train_set(queries: int, seed: int, hard: int) -> TrainSet:
    """The synthetic keyword task as training triples: its relevant passage against the rest."""
    from rerankd.evaluation.synthetic import keyword_task
    from rerankd.finetune.data import TrainQuery, TrainSet

    items = [
        TrainQuery(
            r["query"],
            [r["documents"][r["relevant"][0]]],
            [d for i, d in enumerate(r["documents"]) if i != r["relevant"][0]],
        )
        for r in keyword_task(queries, seed=seed, hard=hard)
    ]
    return TrainSet("keywords", items, [])


def unseen_task(queries: int = 40) -> list[dict[str, Any]]:
    """The keyword task's queries the training never saw (another seed)."""
    from rerankd.evaluation.synthetic import keyword_task

    return keyword_task(queries, seed=99, hard=2)


def top1(scores: np.ndarray, task: list[dict[str, Any]]) -> float:
    """Share of `task`'s queries whose relevant passage scores highest."""
    width = len(task[0]["documents"])
    best = scores.reshape(-1, width).argmax(axis=1)
    hits = [int(b) == r["relevant"][0] for b, r in zip(best, task, strict=True)]
    return round(sum(hits) / len(hits), 3)
