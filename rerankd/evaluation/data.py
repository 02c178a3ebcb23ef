"""Evaluation data: queries, their candidate documents (in retrieval order) and judgments.

Two layouts are read, both checked line by line before any model loads, so a typo costs a
second, not a model load:

- rerankd JSONL, one query a line: `{"query", "documents", "relevant": [indices]}` or graded
  `"relevance": [one grade per document]`; documents are strings or `{"id", "text"}`.
- BEIR: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`, with candidates from a TREC run
  file (`rerankd.evaluation.beir`) or from the built-in bi-encoder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A problem in an input file; `str()` names the file and, when known, the line."""

    def __init__(self, path: Path | str, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = Path(path)
        self.line = line


Qrels = dict[str, dict[str, int]]  # query id -> document id -> grade (trec_eval's shape)


@dataclass
class EvalQuery:
    """One query and its candidates, in the order the first-stage retriever returned them."""

    id: str
    text: str
    doc_ids: list[str]
    documents: list[str]


@dataclass
class EvalSet:
    """What `rerankd eval` scores: queries with candidates, and the judgments."""

    name: str
    queries: list[EvalQuery]
    qrels: Qrels
    notes: list[str] = field(default_factory=list)  # what was left out, and why

    @property
    def pairs(self) -> int:
        return sum(len(q.documents) for q in self.queries)


def read_jsonl_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a bad line is a `DataError`."""
    if not path.is_file():
        raise DataError(path, "no such file")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(path, f"not valid JSON ({exc.msg})", number) from None
            if not isinstance(item, dict):
                raise DataError(path, "expected a JSON object", number)
            yield number, item


def text_field(item: dict[str, Any], key: str, path: Path, line: int) -> str:
    """A required non-empty string field."""
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(path, f"'{key}' must be a non-empty string", line)
    return value


def doc_id(position: int) -> str:
    """Ids for documents that have none: zero-padded positions, so they sort as numbers."""
    return f"{position:05d}"


def read_rerankd_jsonl(path: Path, keep_unjudged: bool = False) -> EvalSet:
    """The rerankd JSONL layout (see the module docstring). `keep_unjudged` keeps the queries
    without a relevant document (calibration learns from their negatives; metrics skip them)."""
    queries: list[EvalQuery] = []
    qrels: Qrels = {}
    seen: set[str] = set()
    unjudged = 0
    for number, item in read_jsonl_lines(path):
        query = text_field(item, "query", path, number)
        qid = str(item.get("id", item.get("query_id", len(queries))))
        if qid in seen:
            raise DataError(path, f"query id {qid!r} appears twice", number)
        seen.add(qid)
        ids, texts = _documents(item.get("documents"), path, number)
        grades = _grades(item, len(texts), path, number)
        queries.append(EvalQuery(qid, query, ids, texts))
        judged = {ids[i]: g for i, g in enumerate(grades) if g is not None}
        if any(g > 0 for g in judged.values()):
            qrels[qid] = judged
        else:
            unjudged += 1
    if not queries:
        raise DataError(path, "no queries: the file is empty")
    if not qrels:
        raise DataError(path, "no query has a relevant document, so there is nothing to measure")
    notes = []
    if unjudged and not keep_unjudged:
        notes.append(
            f"{unjudged} of {len(queries)} queries have no relevant document and are left out "
            "of the means (trec_eval skips queries without judgments)"
        )
    kept = queries if keep_unjudged else [q for q in queries if q.id in qrels]
    return EvalSet(path.stem, kept, qrels, notes)


def _documents(value: Any, path: Path, line: int) -> tuple[list[str], list[str]]:
    if not isinstance(value, list) or not value:
        raise DataError(path, "'documents' must be a non-empty list", line)
    ids: list[str] = []
    texts: list[str] = []
    for position, document in enumerate(value):
        if isinstance(document, dict):
            text, given = document.get("text"), document.get("id")
        else:
            text, given = document, None
        if not isinstance(text, str) or not text.strip():
            raise DataError(
                path, f"documents[{position}] must be a non-empty string or {{'text': ...}}", line
            )
        ids.append(str(given) if given is not None else doc_id(position))
        texts.append(text)
    if len(set(ids)) != len(ids):
        raise DataError(path, "document ids repeat within the query", line)
    return ids, texts


def _grades(item: dict[str, Any], count: int, path: Path, line: int) -> list[int | None]:
    """One grade per document: from `relevance` (graded) or `relevant` (indices, grade 1)."""
    if "relevance" in item:
        grades = item["relevance"]
        if not isinstance(grades, list) or len(grades) != count:
            raise DataError(
                path, f"'relevance' must list one grade for each of the {count} documents", line
            )
        if not all(isinstance(g, int) and not isinstance(g, bool) for g in grades):
            raise DataError(path, "'relevance' grades must be integers", line)
        return list(grades)
    if "relevant" not in item:
        raise DataError(path, "needs 'relevant' (indices) or 'relevance' (grades)", line)
    relevant = item["relevant"]
    if isinstance(relevant, int) and not isinstance(relevant, bool):
        relevant = [relevant]
    if not isinstance(relevant, list):
        raise DataError(path, "'relevant' must be a list of document indices", line)
    out: list[int | None] = [0] * count
    for index in relevant:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
            raise DataError(
                path,
                f"'relevant' names document {index!r}, but there are {count} (0..{count - 1})",
                line,
            )
        out[index] = 1
    return out
