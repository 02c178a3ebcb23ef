"""The BEIR layout (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`) and TREC run files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rerankd.evaluation.data import (
    DataError,
    EvalQuery,
    EvalSet,
    Qrels,
    read_jsonl_lines,
    text_field,
)

# (query ids, query texts, corpus) -> query id -> candidate document ids, best first
Retriever = Callable[[list[str], list[str], dict[str, str]], dict[str, list[str]]]


def is_beir_dir(path: Path) -> bool:
    return path.is_dir() and (path / "corpus.jsonl").is_file()


def read_corpus(path: Path) -> dict[str, str]:
    """Document id -> text; BEIR's title is put before the text, as BEIR itself does."""
    corpus: dict[str, str] = {}
    for number, item in read_jsonl_lines(path):
        did = _id(item, path, number)
        if did in corpus:
            raise DataError(path, f"document id {did!r} appears twice", number)
        title = item.get("title") or ""
        text = item.get("text")
        if not isinstance(text, str) or not isinstance(title, str):
            raise DataError(path, "'text' (and 'title', if given) must be strings", number)
        joined = f"{title} {text}".strip() if title else text.strip()
        if not joined:
            raise DataError(path, f"document {did!r} has no text", number)
        corpus[did] = joined
    if not corpus:
        raise DataError(path, "the corpus is empty")
    return corpus


def read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for number, item in read_jsonl_lines(path):
        queries[_id(item, path, number)] = text_field(item, "text", path, number)
    return queries


def read_qrels(path: Path, queries: dict[str, str], corpus: dict[str, str]) -> Qrels:
    """`query-id<TAB>corpus-id<TAB>score` with an optional header; names must exist."""
    if not path.is_file():
        raise DataError(path, "no such file")
    qrels: Qrels = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split("\t") if "\t" in line else line.split()
        if not fields or not line.strip():
            continue
        if number == 1 and fields[0] == "query-id":
            continue
        if len(fields) == 4:  # TREC qrels: qid iteration docid grade
            fields = [fields[0], fields[2], fields[3]]
        if len(fields) != 3:
            raise DataError(
                path, "expected query-id, corpus-id and score separated by tabs", number
            )
        qid, did, grade_text = fields
        try:
            grade = int(grade_text)
        except ValueError:
            raise DataError(path, f"score {grade_text!r} is not an integer", number) from None
        if qid not in queries:
            raise DataError(path, f"query {qid!r} is not in queries.jsonl", number)
        if did not in corpus:
            raise DataError(path, f"document {did!r} is not in corpus.jsonl", number)
        qrels.setdefault(qid, {})[did] = grade
    qrels = {q: judged for q, judged in qrels.items() if any(g > 0 for g in judged.values())}
    if not qrels:
        raise DataError(path, "no query has a relevant document: the split is empty")
    return qrels


def read_run(
    path: Path, queries: dict[str, str], corpus: dict[str, str], top_k: int
) -> dict[str, list[str]]:
    """A TREC run (`qid Q0 docid rank score tag`): each query's best `top_k`, in trec_eval's order
    (score descending, ties by document id descending)."""
    if not path.is_file():
        raise DataError(path, "no such file")
    scored: dict[str, dict[str, float]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise DataError(path, "expected 6 fields: query-id Q0 doc-id rank score tag", number)
        qid, _, did, _, score_text, _ = fields
        try:
            score = float(score_text)
        except ValueError:
            raise DataError(path, f"score {score_text!r} is not a number", number) from None
        if qid not in queries:
            raise DataError(path, f"query {qid!r} is not in queries.jsonl", number)
        if did not in corpus:
            raise DataError(path, f"document {did!r} is not in corpus.jsonl", number)
        scored.setdefault(qid, {})[did] = score
    if not scored:
        raise DataError(path, "the run file is empty")
    return {
        qid: [d for d, _ in sorted(docs.items(), key=lambda x: (x[1], x[0]), reverse=True)[:top_k]]
        for qid, docs in scored.items()
    }


def qrels_file(root: Path, split: str) -> Path:
    path = root / "qrels" / f"{split}.tsv"
    if not path.is_file():
        found = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        raise DataError(path, f"no such split; qrels/ has {', '.join(found) or 'no .tsv files'}")
    return path


def read_beir(
    root: Path,
    split: str = "test",
    run: Path | None = None,
    top_k: int = 100,
    retrieve: Retriever | None = None,
) -> EvalSet:
    """The split's judged queries with candidates from `run`, or from `retrieve` when no run is
    given (called only after every file has been checked)."""
    corpus = read_corpus(root / "corpus.jsonl")
    queries = read_queries(root / "queries.jsonl")
    qrels = read_qrels(qrels_file(root, split), queries, corpus)
    ids = sorted(qrels)
    if run is not None:
        candidates = read_run(run, queries, corpus, top_k)
    elif retrieve is not None:
        candidates = retrieve(ids, [queries[q] for q in ids], corpus)
    else:
        raise DataError(root, "no candidates: give a run file (--run)")
    missing = [q for q in ids if not candidates.get(q)]
    notes = []
    if missing:
        notes.append(
            f"{len(missing)} judged queries have no candidates in the run and are left out "
            "(trec_eval skips them too)"
        )
    kept = [q for q in ids if candidates.get(q)]
    if not kept:
        raise DataError(run or root, "no judged query has candidates: nothing to evaluate")
    items = [
        EvalQuery(q, queries[q], candidates[q], [corpus[d] for d in candidates[q]]) for q in kept
    ]
    return EvalSet(root.name, items, {q: qrels[q] for q in kept}, notes)


def _id(item: dict[str, object], path: Path, line: int) -> str:
    value = item.get("_id", item.get("id"))
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(path, "missing '_id'", line)
    return str(value)
