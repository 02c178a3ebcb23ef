"""The listwise shape: one prompt reads the query and many documents together.

A listwise family cuts a request's documents into blocks (prompts); each block is one item for
the scheduler, whose `len()` is its tokens, and is never split, since a document's score
depends on every other document of its block. The head yields, per block, one vector for the
query (slot 0) and one per passage (slots 1..n); `combine` turns a request's block rows into
one raw score per document. A document cut into chunks is several passages and scores as its
best one.
"""

from __future__ import annotations

import functools
from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from rerankd.engine.plan import LongDocPolicy, ScoringPlan
from rerankd.engine.tokenize import Sequence
from rerankd.families.base import ModelFamily


@dataclass(frozen=True)
class ListwisePlan:
    """A request's blocks and which document each passage of a block belongs to."""

    blocks: list[Sequence]  # one prompt each: the scheduler's unit, never split
    owners: list[np.ndarray]  # per block, the document index of passage 1..n
    n_documents: int

    @property
    def tokens(self) -> int:
        return sum(len(b) for b in self.blocks)


class ListwiseFamily(ModelFamily):
    """Documents read together in blocks; the raw score is a cosine, normalised to [0, 1]."""

    scoring = "listwise"
    # The most passages one block holds: the head's output has this many passage slots.
    block_documents: ClassVar[int]

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        return np.clip((raw + 1.0) / 2.0, 0.0, 1.0)

    @abstractmethod
    def plan_blocks(
        self, query: str, documents: list[str], policy: LongDocPolicy, instruction: str | None
    ) -> ListwisePlan:
        """The blocks that score these documents (in this order) for this query."""

    @abstractmethod
    def combine(self, outputs: np.ndarray, plan: ListwisePlan) -> np.ndarray:
        """Head rows, one per block ([blocks, 1 + block_documents, dim]) -> raw scores."""

    def plan(
        self, query: str, documents: list[str], policy: LongDocPolicy, instruction: str | None
    ) -> ScoringPlan:
        """The blocks as a `ScoringPlan` (one sequence per block), for callers that run plans."""
        listwise = self.plan_blocks(query, documents, policy, instruction)
        owners = np.arange(len(listwise.blocks), dtype=np.int64)
        combine = functools.partial(_combine_plan, self, listwise)
        return ScoringPlan(list(listwise.blocks), owners, listwise.n_documents, combine)


def _combine_plan(
    family: ListwiseFamily, plan: ListwisePlan, outputs: np.ndarray, owners: np.ndarray, count: int
) -> np.ndarray:
    return family.combine(outputs, plan)
