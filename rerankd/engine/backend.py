"""The small interface every model backend implements, and the padded batch it consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from rerankd.engine.tokenize import Sequence


@dataclass(frozen=True, slots=True)
class PaddedBatch:
    """Sequences padded to the batch's own longest one (never to `max_length`)."""

    input_ids: np.ndarray  # int64 [batch, longest]
    attention_mask: np.ndarray  # int64 [batch, longest]
    token_type_ids: np.ndarray  # int64 [batch, longest]

    @classmethod
    def pad(
        cls, sequences: list[Sequence], pad_id: int, side: Literal["left", "right"] = "right"
    ) -> PaddedBatch:
        """Pad on the right (encoders) or the left (how causal LM references batch)."""
        longest = max(len(s) for s in sequences)
        shape = (len(sequences), longest)
        input_ids = np.full(shape, pad_id, dtype=np.int64)
        attention_mask = np.zeros(shape, dtype=np.int64)
        token_type_ids = np.zeros(shape, dtype=np.int64)
        for row, seq in enumerate(sequences):
            span = slice(0, len(seq)) if side == "right" else slice(longest - len(seq), longest)
            input_ids[row, span] = seq.input_ids
            attention_mask[row, span] = 1
            token_type_ids[row, span] = seq.type_ids
        return cls(input_ids, attention_mask, token_type_ids)

    def inputs(self, names: list[str]) -> dict[str, np.ndarray]:
        """The arrays a model takes, by input name."""
        return {name: getattr(self, name) for name in names}

    @property
    def padded_tokens(self) -> int:
        return int(self.input_ids.size)

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())


class Batch(Protocol):
    """What a backend runs: named input arrays (a `PaddedBatch`, or a family's own batch,
    such as images' pixel values)."""

    def inputs(self, names: list[str]) -> dict[str, np.ndarray]: ...


class Backend(Protocol):
    """Runs the model on a padded batch.

    Returns what the model family's head yields, one row per sequence, as float32 on the
    host: a raw score (shape [batch]) for pair families, a unit-length embedding (shape
    [batch, dim]) for embedding families.
    """

    description: str

    def run(self, batch: Batch) -> np.ndarray: ...

    def close(self) -> None:
        """Release the model's memory; the backend is not used again."""
