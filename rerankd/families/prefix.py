"""A request's shared prefix, computed once: the plan items and batches that carry it.

Yes/no rerankers whose template puts the instruction and the query before the document
(Qwen3-Reranker, bge-reranker-v2-gemma, mxbai-rerank-v2) run the same prefix tokens for every
document of a request. With sharing on (torch backends; see `TokenLogitHead`), a plan item is
the prefix's ids plus the tokens that differ (the document window and the template's closing
part): the head computes the prefix's key/value cache once, keeps it while it fits its budget
(so a later request with the same instruction and query reuses it), and runs only the rest.

Costs: an item's `len()` is what it runs. The request's first item also pays for the prefix,
so a request's `usage.tokens` is prefix + documents instead of prefix x documents + documents.
ONNX Runtime runs the plain sequences: its exported graph has no key/value inputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rerankd.engine.backend import Batch
from rerankd.engine.plan import ScoringPlan


@dataclass(frozen=True, slots=True)
class PrefixedSequence:
    """One sequence as (the request's shared prefix, the tokens after it)."""

    prefix: tuple[int, ...]
    rest: list[int]
    charge: int = 0  # prefix tokens this item pays for: the whole prefix on a request's first

    def __len__(self) -> int:
        return len(self.rest) + self.charge

    @property
    def shared(self) -> int:
        """Prefix tokens this item does not run (the unshared path would)."""
        return len(self.prefix) - self.charge


@dataclass(frozen=True, slots=True)
class PrefixBatch:
    """Items of one prefix: the prefix once, the rests padded on the right."""

    prefix_ids: np.ndarray  # int64 [1, prefix]
    input_ids: np.ndarray  # int64 [batch, longest rest]
    attention_mask: np.ndarray  # int64 [batch, longest rest]

    @classmethod
    def build(cls, prefix: tuple[int, ...], rests: list[list[int]], pad_id: int) -> PrefixBatch:
        longest = max(len(r) for r in rests)
        input_ids = np.full((len(rests), longest), pad_id, dtype=np.int64)
        mask = np.zeros((len(rests), longest), dtype=np.int64)
        for row, rest in enumerate(rests):
            input_ids[row, : len(rest)] = rest
            mask[row, : len(rest)] = 1
        return cls(np.asarray([prefix], dtype=np.int64), input_ids, mask)

    def inputs(self, names: list[str]) -> dict[str, np.ndarray]:
        """Every array the prefix-aware head takes (the torch backend passes them all)."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "prefix_ids": self.prefix_ids,
        }


def share_prefix(plan: ScoringPlan, prefix_length: int) -> ScoringPlan:
    """The plan's token sequences as prefixed items; the first pays for the prefix."""
    items: list[PrefixedSequence] = []
    for index, sequence in enumerate(plan.sequences):
        ids = list(sequence.input_ids)
        prefix = tuple(ids[:prefix_length])
        items.append(PrefixedSequence(prefix, ids[prefix_length:], prefix_length * (index == 0)))
    return dataclasses.replace(plan, sequences=items)


def shared_tokens(items: list[object]) -> int:
    """Prefix tokens a plan's items do not run (0 for plain sequences)."""
    return sum(item.shared for item in items if isinstance(item, PrefixedSequence))


def run_prefixed(
    backend_run: Callable[[Batch], np.ndarray], items: list[PrefixedSequence], pad_id: int
) -> np.ndarray:
    """One backend run per distinct prefix in the batch; rows back in the items' order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for row, item in enumerate(items):
        groups.setdefault(item.prefix, []).append(row)
    outputs: np.ndarray | None = None
    for prefix, rows in groups.items():
        batch = PrefixBatch.build(prefix, [items[r].rest for r in rows], pad_id)
        result = backend_run(batch)
        if outputs is None:
            outputs = np.empty((len(items), *result.shape[1:]), dtype=result.dtype)
        outputs[rows] = result
    assert outputs is not None
    return outputs
