"""Input checks and result ordering shared by the in-process `Reranker` and the server."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rerankd.documents import Document, Rendered
from rerankd.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class RankedDocument:
    index: int  # position in the request's documents
    score: float  # relevance in [0, 1], or the raw logit when raw scores were asked for
    document: Rendered  # the text, or {"image": source} as the client sent it


def check_top_n(top_n: int | None, count: int, clamp: bool = False) -> int:
    """`None` means all; otherwise 1..count.

    Above the count is an error, unless `clamp` is set: Cohere's API returns every document
    then, and clients such as LangChain's `CohereRerank` (default top_n=3) rely on it.
    """
    if top_n is None:
        return count
    if isinstance(top_n, bool) or not isinstance(top_n, int):
        raise InvalidInput(f"top_n must be an integer, not {type(top_n).__name__}")
    if top_n < 1:
        raise InvalidInput(f"top_n must be at least 1, not {top_n}")
    if top_n > count and not clamp:
        raise InvalidInput(f"top_n is {top_n} but only {count} documents were sent")
    return min(top_n, count)


def rank(scores: np.ndarray, documents: list[Document], top_n: int) -> list[RankedDocument]:
    """Best first; ties keep the documents' original order."""
    order = np.argsort(-scores, kind="stable")[:top_n]
    return [RankedDocument(int(i), float(scores[i]), documents[i].render()) for i in order]
