"""What every model family shares about planning a request: long documents and plans.

A long document is truncated or cut into overlapping windows (`windows`); a `ScoringPlan`
lists the sequences to run and which document each belongs to. Either way a document's raw
score is its best window's, so a long document is as relevant as its most relevant part.
How a query and a window become a sequence is the model family's business
(`rerankd/families/`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rerankd.errors import InvalidInput

Strategy = Literal["truncate", "chunk"]
Direction = Literal["right", "left"]


@dataclass(frozen=True)
class LongDocPolicy:
    """What to do with a document longer than the model (or the request) allows."""

    strategy: Strategy = "truncate"
    max_tokens_per_doc: int | None = None  # cap below the model's own room for the document
    max_chunks_per_doc: int = 16
    overlap: int = 32  # tokens shared by consecutive chunks
    direction: Direction = "right"  # which end `truncate` cuts: TEI's truncation_direction
    allow_truncation: bool = True  # False: a document that does not fit is an error (TEI)

    def __post_init__(self) -> None:
        if self.strategy not in ("truncate", "chunk"):
            raise InvalidInput(f"unknown long-document strategy {self.strategy!r}")
        if self.max_tokens_per_doc is not None and self.max_tokens_per_doc < 1:
            raise InvalidInput("max_tokens_per_doc must be at least 1")
        if self.max_chunks_per_doc < 1:
            raise InvalidInput("max_chunks_per_doc must be at least 1")

    def cache_key(self) -> tuple[object, ...]:
        """Every field that changes a score or its outcome: a request that refuses truncation
        must not be answered from a truncated score."""
        return (
            self.strategy,
            self.max_tokens_per_doc,
            self.max_chunks_per_doc,
            self.overlap,
            self.direction,
            self.allow_truncation,
        )


@dataclass(frozen=True)
class ScoringPlan:
    """The sequences to run for one request and which document each one belongs to.

    `owners[i]` is the document index of `sequences[i]`, or -1 for a sequence that belongs to
    no document (a bi-encoder's query). `combine_rows` is the model family's rule for turning
    one output row per sequence into one raw score per document.
    """

    sequences: list[Any]  # token `Sequence`s, or a family's own items; len() is their cost
    owners: np.ndarray
    n_documents: int
    combine_rows: Callable[[np.ndarray, np.ndarray, int], np.ndarray]

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences)

    def combine(self, outputs: np.ndarray) -> np.ndarray:
        """Model outputs (one row per sequence) -> one raw score per document."""
        return self.combine_rows(outputs, self.owners, self.n_documents)


def windows(ids: list[int], room: int, policy: LongDocPolicy, index: int) -> list[list[int]]:
    """A document's token ids cut to `room`: one window, or overlapping chunks."""
    if len(ids) <= room:
        return [ids]
    if not policy.allow_truncation:
        raise InvalidInput(
            f"document {index} has {len(ids)} tokens, more than the {room} that fit with this "
            "query; shorten it or allow truncation"
        )
    if policy.strategy == "truncate":
        return [ids[-room:] if policy.direction == "left" else ids[:room]]
    step = max(1, room - min(policy.overlap, room // 2))
    chunks = []
    for start in range(0, len(ids), step):
        chunks.append(ids[start : start + room])
        if start + room >= len(ids) or len(chunks) == policy.max_chunks_per_doc:
            break
    return chunks
