"""IR metrics by ir-measures on the trec_eval engine (pytrec_eval), with trec_eval's rules.

trec_eval ranks a query's documents by score, descending, and breaks ties by document id,
descending. ir-measures computes some measures (RR@k) in a provider that breaks ties another
way, so every run is first put into trec_eval's order and handed over as strictly decreasing
scores: then each measure, whichever provider computes it, sees the same ranking. A judged
relevant document that is not among a query's candidates counts as not retrieved; a query
without judgments is not measured.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rerankd.evaluation.data import Qrels

Run = Mapping[str, Mapping[str, float]]  # query id -> document id -> score

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "map", "recall@10")

# our name -> ir-measures' measure name; "@k" is carried over
_MEASURES = {"ndcg": "nDCG", "mrr": "RR", "map": "AP", "recall": "R", "precision": "P", "p": "P"}
_NAME = re.compile(r"^(ndcg|mrr|map|recall|precision|p)(?:@(\d+))?$")


def check_metric(name: str) -> str:
    """The canonical spelling of a metric name (`nDCG@10` -> `ndcg@10`), or a ValueError."""
    match = _NAME.match(name.strip().lower())
    if not match or (match.group(1) in ("recall", "precision", "p") and not match.group(2)):
        raise ValueError(
            f"unknown metric {name!r}; use ndcg@K, mrr@K, map, map@K, recall@K or precision@K"
        )
    kind, cutoff = match.groups()
    kind = "precision" if kind == "p" else kind
    if cutoff is not None and int(cutoff) < 1:
        raise ValueError(f"metric {name!r}: the cutoff must be at least 1")
    return kind if cutoff is None else f"{kind}@{cutoff}"


def _measure(name: str) -> Any:
    import ir_measures

    kind, _, cutoff = name.partition("@")
    return ir_measures.parse_measure(_MEASURES[kind] + (f"@{cutoff}" if cutoff else ""))


def trec_order(scores: Mapping[str, float]) -> list[str]:
    """Document ids in trec_eval's order: score descending, then id descending."""
    return [d for d, _ in sorted(scores.items(), key=lambda x: (x[1], x[0]), reverse=True)]


def _canonical(run: Run) -> dict[str, dict[str, float]]:
    """The same ranking as strictly decreasing scores (n, n-1, ... 1), so no provider sees a tie."""
    out = {}
    for qid, scores in run.items():
        order = trec_order(scores)
        out[qid] = {d: float(len(order) - i) for i, d in enumerate(order)}
    return out


def per_query(qrels: Qrels, run: Run, metrics: Sequence[str]) -> dict[str, dict[str, float]]:
    """metric -> query id -> value, for the queries that have judgments and candidates."""
    import ir_measures

    names = {str(_measure(m)): m for m in metrics}
    out: dict[str, dict[str, float]] = {m: {} for m in metrics}
    # Only queries with both judgments and candidates (trec_eval's default): providers differ
    # on the others, some skipping them and some counting a zero.
    both = [q for q in qrels if run.get(q)]
    judged = {q: dict(qrels[q]) for q in both}
    ranked = _canonical({q: run[q] for q in both})
    for row in ir_measures.iter_calc([_measure(m) for m in metrics], judged, ranked):
        out[names[str(row.measure)]][row.query_id] = float(row.value)
    return out


def mean_metrics(qrels: Qrels, run: Run, metrics: Sequence[str]) -> dict[str, float]:
    """Each metric's mean over the measured queries (trec_eval's `all` row)."""
    values = per_query(qrels, run, metrics)
    return {m: (sum(v.values()) / len(v) if v else 0.0) for m, v in values.items()}


def run_from_scores(
    doc_ids: Iterable[Sequence[str]], query_ids: Iterable[str], scores: Iterable[Any]
) -> dict[str, dict[str, float]]:
    """Assemble a run from each query's candidate ids and their scores."""
    return {
        qid: {d: float(s) for d, s in zip(ids, values, strict=True)}
        for qid, ids, values in zip(query_ids, doc_ids, scores, strict=True)
    }
