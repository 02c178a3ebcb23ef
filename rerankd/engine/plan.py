"""Turning one (query, documents) request into model inputs, and model outputs into scores.

A cross-encoder scores each (query, chunk) sequence; a bi-encoder embeds the query once and
each chunk, and scores by cosine. Either way a document's raw score is its best chunk's, so a
long document split into windows is as relevant as its most relevant window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rerankd.engine.tokenize import Sequence, TextTokenizer
from rerankd.errors import InvalidInput
from rerankd.models import ModelKind

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

    def cache_key(self) -> tuple:
        return (
            self.strategy,
            self.max_tokens_per_doc,
            self.max_chunks_per_doc,
            self.overlap,
            self.direction,
        )


@dataclass(frozen=True)
class ScoringPlan:
    """The sequences to run for one request and which document each one belongs to.

    `owners[i]` is the document index of `sequences[i]`, or -1 for a bi-encoder's query.
    """

    kind: ModelKind
    sequences: list[Sequence]
    owners: np.ndarray
    n_documents: int

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences)

    def combine(self, outputs: np.ndarray) -> np.ndarray:
        """Model outputs (one row per sequence) -> one raw score per document."""
        if self.kind is ModelKind.CROSS_ENCODER:
            per_sequence, owners = outputs.astype(np.float64), self.owners
        else:
            query, chunks = outputs[0], outputs[1:]
            per_sequence, owners = (
                chunks.astype(np.float64) @ query.astype(np.float64),
                self.owners[1:],
            )
        scores = np.full(self.n_documents, -np.inf)
        np.maximum.at(scores, owners, per_sequence)
        return scores


class Planner:
    """Builds `ScoringPlan`s under the model's limits."""

    def __init__(self, tokenizer: TextTokenizer, kind: ModelKind, max_length: int, query_cap: int):
        self.tokenizer = tokenizer
        self.kind = kind
        self.max_length = max_length
        self.query_cap = min(query_cap, max_length - tokenizer.pair_specials - 1)

    def plan(self, query: str, documents: list[str], policy: LongDocPolicy) -> ScoringPlan:
        encoded = self.tokenizer.encode([query, *documents])
        query_ids, doc_ids = encoded[0], encoded[1:]
        if self.kind is ModelKind.CROSS_ENCODER:
            query_ids = query_ids[: self.query_cap]
            room = self.max_length - len(query_ids) - self.tokenizer.pair_specials
            first: list[Sequence] = []
            owners: list[int] = []

            def build(window: list[int]) -> Sequence:
                return self.tokenizer.pair(query_ids, window)
        else:
            room = self.max_length - self.tokenizer.single_specials
            first = [self.tokenizer.single(query_ids[:room])]
            owners = [-1]
            build = self.tokenizer.single
        if policy.max_tokens_per_doc is not None:
            room = min(room, policy.max_tokens_per_doc)
        sequences = first
        for index, ids in enumerate(doc_ids):
            for window in _windows(ids, room, policy, index):
                sequences.append(build(window))
                owners.append(index)
        return ScoringPlan(self.kind, sequences, np.asarray(owners, dtype=np.int64), len(documents))


def _windows(ids: list[int], room: int, policy: LongDocPolicy, index: int) -> list[list[int]]:
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
    windows = []
    for start in range(0, len(ids), step):
        windows.append(ids[start : start + room])
        if start + room >= len(ids) or len(windows) == policy.max_chunks_per_doc:
            break
    return windows
