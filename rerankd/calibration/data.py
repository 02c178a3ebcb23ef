"""Labeled pairs for calibration from an evaluation set, and the hash that names the data.

A pair is relevant when its grade reaches `relevant_grade` (graded judgments) or it is listed
as relevant (binary); a candidate without a judgment counts as not relevant, as trec_eval
counts it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import numpy as np

from rerankd.calibration.fit import Labeled
from rerankd.evaluation.data import EvalSet

# (query, documents) -> raw scores, one per document
ScoreRaw = Callable[[str, list[str]], np.ndarray]


def labels_of(data: EvalSet, relevant_grade: int = 1) -> list[np.ndarray]:
    """One 0/1 array per query, in the candidates' order."""
    return [
        np.asarray(
            [data.qrels.get(q.id, {}).get(d, 0) >= relevant_grade for d in q.doc_ids], np.int64
        )
        for q in data.queries
    ]


def data_hash(data: EvalSet, labels: list[np.ndarray]) -> str:
    """sha256 of the labeled pairs as sorted (query, document, label) lines: the same pairs
    hash the same from JSONL or BEIR, in any order; a changed text or judgment changes it."""
    lines = sorted(
        json.dumps([query.text, text, int(label)])
        for query, marks in zip(data.queries, labels, strict=True)
        for text, label in zip(query.documents, marks, strict=True)
    )
    digest = hashlib.sha256("\n".join(lines).encode())
    return "sha256:" + digest.hexdigest()[:16]


def score_pairs(
    data: EvalSet,
    score_raw: ScoreRaw,
    normalize: Callable[[np.ndarray], np.ndarray],
    relevant_grade: int = 1,
    advance: Callable[[int], None] | None = None,
) -> tuple[Labeled, dict[str, object]]:
    """Every candidate scored raw, with its label and query; and the data's provenance."""
    labels = labels_of(data, relevant_grade)
    raw: list[np.ndarray] = []
    for query in data.queries:
        raw.append(np.asarray(score_raw(query.text, query.documents), np.float64))
        if advance is not None:
            advance(1)
    flat = np.concatenate(raw)
    all_labels = np.concatenate(labels)
    groups = np.concatenate([np.full(len(r), i) for i, r in enumerate(raw)])
    provenance: dict[str, object] = {
        "name": data.name,
        "hash": data_hash(data, labels),
        "queries": len(data.queries),
        "pairs": int(all_labels.size),
        "relevant": int(all_labels.sum()),
        "relevant_grade": relevant_grade,
    }
    return Labeled(flat, normalize(flat), all_labels, groups), provenance
