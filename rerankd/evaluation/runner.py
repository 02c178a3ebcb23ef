"""Score every query's candidates with each model, then measure the rankings."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from rerankd.evaluation.agreement import Agreement, compare
from rerankd.evaluation.data import EvalSet
from rerankd.evaluation.metrics import mean_metrics, run_from_scores
from rerankd.evaluation.scorers import Scorer

BASELINE = "baseline"  # the candidates' own order, before reranking

Advance = Callable[[int], None]


@dataclass
class ModelResult:
    label: str
    metrics: dict[str, float]
    scores: list[np.ndarray] = field(repr=False)
    seconds: float = 0.0
    queries: int = 0

    @property
    def queries_per_second(self) -> float:
        return self.queries / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Report:
    data: str
    metrics: list[str]
    queries: int
    pairs: int
    results: list[ModelResult]
    agreements: list[Agreement]
    notes: list[str]
    labels: list[np.ndarray] = field(default_factory=list)  # per query: 1 where judged relevant


def relevance_labels(data: EvalSet) -> list[np.ndarray]:
    """Each candidate judged relevant (grade > 0) or not: what the reliability diagram and
    the calibration figures measure scores against."""
    return [
        np.array([float(data.qrels.get(q.id, {}).get(d, 0) > 0) for d in q.doc_ids])
        for q in data.queries
    ]


def baseline(data: EvalSet, metrics: Sequence[str]) -> ModelResult:
    """The candidate order as strictly decreasing scores: what the retriever alone achieves."""
    scores = [np.arange(len(q.doc_ids), 0, -1, dtype=np.float64) for q in data.queries]
    return _measured(BASELINE, data, metrics, scores, 0.0)


def score_all(
    data: EvalSet, scorer: Scorer, metrics: Sequence[str], advance: Advance
) -> ModelResult:
    """Every query through `scorer`, timed; `advance(1)` after each query for the progress bar."""
    scores: list[np.ndarray] = []
    started = time.perf_counter()
    for query in data.queries:
        scores.append(np.asarray(scorer.score(query.text, query.documents), dtype=np.float64))
        advance(1)
    return _measured(scorer.label, data, metrics, scores, time.perf_counter() - started)


def agreements(results: list[ModelResult]) -> list[Agreement]:
    """Every model against the first one (the reference mode)."""
    models = [r for r in results if r.label != BASELINE]
    return [compare(models[0].label, r.label, models[0].scores, r.scores) for r in models[1:]]


def _measured(
    label: str, data: EvalSet, metrics: Sequence[str], scores: list[np.ndarray], seconds: float
) -> ModelResult:
    run = run_from_scores([q.doc_ids for q in data.queries], [q.id for q in data.queries], scores)
    return ModelResult(
        label, mean_metrics(data.qrels, run, metrics), scores, seconds, len(data.queries)
    )
