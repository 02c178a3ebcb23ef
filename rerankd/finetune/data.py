"""Training data for `rerankd finetune`, checked line by line before anything loads.

One query a line in JSONL, in either shape:

- pairs and triples: `{"query", "positive": text or [texts], "negatives": [texts]}`
  (`negatives` optional: missing ones are mined with a bi-encoder);
- rerankd's evaluation shape: `{"query", "documents", "relevant"}` or graded `"relevance"`.

Or a BEIR directory: the split's qrels give each query its positives (grade > 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerankd.evaluation.beir import is_beir_dir, qrels_file, read_corpus, read_qrels, read_queries
from rerankd.evaluation.data import DataError, read_jsonl_lines, read_rerankd_jsonl, text_field


@dataclass
class TrainQuery:
    query: str
    positives: list[str]
    negatives: list[str] = field(default_factory=list)


@dataclass
class TrainSet:
    name: str
    queries: list[TrainQuery]
    corpus: list[str]  # every passage known, for mining negatives


def read_train_set(path: Path, split: str = "train") -> TrainSet:
    if is_beir_dir(path):
        return _read_beir(path, split)
    if path.is_dir():
        raise DataError(path, "a directory without corpus.jsonl is not a BEIR data set")
    if not path.is_file():
        raise DataError(path, "no such file")
    queries: list[TrainQuery] = []
    evaluation_shape: bool | None = None
    for number, item in read_jsonl_lines(path):
        shape = "documents" in item
        if evaluation_shape is not None and shape != evaluation_shape:
            raise DataError(path, "mixes triples and the evaluation shape; use one", number)
        evaluation_shape = shape
        if not shape:
            queries.append(_triple(item, path, number))
    if evaluation_shape:  # read again with the evaluation reader's own checks
        queries = [
            _from_eval(q.text, q.documents, q.doc_ids, grades) for q, grades in _graded(path)
        ]
    if not queries:
        raise DataError(path, "no training examples: the file is empty")
    corpus = sorted({t for q in queries for t in (*q.positives, *q.negatives)})
    return TrainSet(path.stem, queries, corpus)


def _triple(item: dict[str, Any], path: Path, line: int) -> TrainQuery:
    query = text_field(item, "query", path, line)
    positives = _texts(item.get("positive", item.get("positives")), "positive", path, line)
    if not positives:
        raise DataError(path, "needs 'positive' (a text or a list of texts)", line)
    negatives = _texts(item.get("negatives", item.get("negative")), "negatives", path, line)
    return TrainQuery(query, positives, negatives)


def _texts(value: Any, key: str, path: Path, line: int) -> list[str]:
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
        raise DataError(path, f"'{key}' must be a non-empty text or a list of them", line)
    return list(values)


def _graded(path: Path) -> list[tuple[Any, dict[str, int]]]:
    data = read_rerankd_jsonl(path)
    return [(q, data.qrels[q.id]) for q in data.queries]


def _from_eval(
    query: str, documents: list[str], ids: list[str], grades: dict[str, int]
) -> TrainQuery:
    positives = [d for d, i in zip(documents, ids, strict=True) if grades.get(i, 0) > 0]
    negatives = [d for d, i in zip(documents, ids, strict=True) if grades.get(i, 0) <= 0]
    return TrainQuery(query, positives, negatives)


def _read_beir(root: Path, split: str) -> TrainSet:
    corpus = read_corpus(root / "corpus.jsonl")
    queries = read_queries(root / "queries.jsonl")
    qrels = read_qrels(qrels_file(root, split), queries, corpus)
    items = [
        TrainQuery(
            queries[q],
            [corpus[d] for d, g in judged.items() if g > 0],
            [corpus[d] for d, g in judged.items() if g <= 0],
        )
        for q, judged in sorted(qrels.items())
    ]
    return TrainSet(root.name, items, list(corpus.values()))
