"""Input checks and result ordering shared by the in-process `Reranker` and the server."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rerankd.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class RankedDocument:
    index: int  # position in the request's documents
    score: float  # relevance in [0, 1], or the raw logit when raw scores were asked for
    document: str


def check_inputs(query: object, documents: object) -> tuple[str, list[str]]:
    """Reject what no model can score, with a message that says which input is wrong."""
    if not isinstance(query, str):
        raise InvalidInput(f"query must be a string, not {type(query).__name__}")
    if not query.strip():
        raise InvalidInput("query is empty")
    _check_encodable(query, "query")
    if isinstance(documents, str) or not isinstance(documents, (list, tuple)):
        raise InvalidInput(f"documents must be a list of strings, not {type(documents).__name__}")
    if not documents:
        raise InvalidInput("documents is empty: send at least one document")
    for index, document in enumerate(documents):
        if not isinstance(document, str):
            raise InvalidInput(
                f"documents[{index}] must be a string, not {type(document).__name__}"
            )
        if not document.strip():
            raise InvalidInput(f"documents[{index}] is empty or whitespace only")
        _check_encodable(document, f"documents[{index}]")
    return query, list(documents)


def _check_encodable(text: str, name: str) -> None:
    """JSON can carry lone surrogates (`"\\ud800"`); no tokenizer or cache key can take them."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"{name} is not valid Unicode: a lone surrogate (U+{ord(text[exc.start]):04X}) "
            f"at character {exc.start}"
        ) from None


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


def rank(scores: np.ndarray, documents: list[str], top_n: int) -> list[RankedDocument]:
    """Best first; ties keep the documents' original order."""
    order = np.argsort(-scores, kind="stable")[:top_n]
    return [RankedDocument(int(i), float(scores[i]), documents[i]) for i in order]
