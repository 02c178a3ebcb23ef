"""Input checks and result ordering shared by the in-process `Reranker` and the server."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rerankd.documents import Document, Rendered
from rerankd.errors import InvalidInput
from rerankd.spans import Span


@dataclass(frozen=True, slots=True)
class RankedDocument:
    index: int  # position in the request's documents
    score: float  # relevance in [0, 1], or the raw logit when raw scores were asked for
    document: Rendered  # the text, or {"image": source} as the client sent it
    raw: float | None = None  # the model's own score, when `score` is calibrated
    spans: list[Span] | None = field(default=None)  # when the request asked for spans


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


def rank(
    scores: np.ndarray,
    documents: list[Document],
    top_n: int,
    *,
    raw: np.ndarray | None = None,
    min_relevance: float | None = None,
) -> list[RankedDocument]:
    """Best first; ties keep the documents' original order. With `raw` (the model's scores
    under a calibration, which is monotone) the order is the raw scores', so a calibration's
    flat steps never reorder documents; `min_relevance` drops lower scores before `top_n`."""
    key = scores if raw is None else raw
    order = np.argsort(-key, kind="stable")
    if min_relevance is not None:
        order = order[scores[order] >= min_relevance]
    return [
        RankedDocument(
            int(i),
            float(scores[i]),
            documents[i].render(),
            None if raw is None else float(raw[i]),
        )
        for i in order[:top_n]
    ]


def check_min_relevance(value: object) -> float | None:
    """A finite number, or None (no threshold)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise InvalidInput("min_relevance must be a number")
    if value in (float("inf"), float("-inf")):
        raise InvalidInput("min_relevance must be finite")
    return float(value)
