"""Where evaluation sets come from: a rerankd JSONL file, or BEIR with a run or a retriever."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rerankd.evaluation.beir import Retriever, is_beir_dir, read_beir
from rerankd.evaluation.data import DataError, EvalSet, read_rerankd_jsonl


def load_eval_set(
    data: Path,
    run: Path | None,
    split: str,
    top_k: int,
    retriever: str,
    device: str,
    keep_unjudged: bool = False,
) -> EvalSet:
    """Read and check every input file; the retriever loads only once they are all fine."""
    if is_beir_dir(data):
        return read_beir(
            data, split, run, top_k, None if run else _retrieve(retriever, top_k, device)
        )
    if data.is_dir():
        raise DataError(data, "a directory without corpus.jsonl is not a BEIR data set")
    if not data.exists():  # before --run: the data is what the user got wrong
        raise DataError(
            data,
            "no such file or directory (DATA is a rerankd JSONL file or a BEIR directory "
            "with corpus.jsonl, queries.jsonl and qrels/)",
        )
    if run is not None:
        raise DataError(
            run, "--run goes with the BEIR layout; a rerankd JSONL file has its candidates"
        )
    return read_rerankd_jsonl(data, keep_unjudged)


def _retrieve(model: str, top_k: int, device: str) -> Retriever:
    def retrieve(
        ids: list[str], queries: list[str], corpus: dict[str, str]
    ) -> dict[str, list[str]]:
        from rerankd.evaluation.retrieve import DenseRetriever

        with progress_bar() as progress:
            task = progress.add_task(f"candidates from {model}", total=len(corpus) + len(queries))
            retriever = DenseRetriever(model, device=device)
            return retriever.top_k(ids, queries, corpus, top_k, lambda n: progress.advance(task, n))

    return retrieve


@contextmanager
def progress_bar() -> Iterator[Any]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as progress:
        yield progress
