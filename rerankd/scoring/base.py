"""What every scoring path shares: one request's job, its result, the model it runs on.

A path turns a request's distinct documents into one raw score each, reading and writing its
own cache and submitting its own units of work; the service and the in-process `Reranker`
build a `ScoringJob` and a `Target` and never ask which path it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from rerankd.documents import Loaded, TextDocument
from rerankd.engine import LongDocPolicy
from rerankd.engine.engine import Engine
from rerankd.errors import InvalidInput
from rerankd.families.base import FamilyOptions, ModelFamily, ScoringKind

T = TypeVar("T")

Submit = Callable[[list[Any]], Awaitable[np.ndarray]]
Admit = Callable[[int], None]


class Prepare(Protocol):
    """Run `work` (planning: tokenizing) off the event loop, its estimated tokens and
    characters counted against the queue meanwhile (the batcher's `prepare`)."""

    def __call__(self, work: Callable[[], T], tokens: int, chars: int, /) -> Awaitable[T]: ...


@dataclass(frozen=True)
class ScoringJob:
    """One request's scoring work: documents are the distinct ones, each with its first
    index in the request (decode errors name it)."""

    query: Loaded
    documents: list[tuple[int, Loaded]]
    policy: LongDocPolicy
    instruction: str | None  # from the engine's `instruction_for`
    options: FamilyOptions | None  # from the family's `options_for`

    @property
    def loaded(self) -> list[Loaded]:
        return [d for _, d in self.documents]

    def inputs(self) -> tuple[object, ...]:
        """Everything besides the texts that scores see (family options only where there
        are): part of every cache key."""
        inputs: tuple[object, ...] = (*self.policy.cache_key(), self.instruction)
        if self.options is not None:
            inputs = (*inputs, self.options.cache_key())
        return inputs


@dataclass(frozen=True)
class Target:
    """The loaded model a job runs on, and how its units of work reach it."""

    name: str  # the label metrics carry
    identity: tuple[object, ...]  # what its cached values are keyed by
    engine: Engine
    submit: Submit  # items -> one output row per item (the batcher, or a direct loop)
    admit: Admit  # refuse an overloaded request from a token estimate, before tokenizing
    prepare: Prepare  # plan off the event loop (the batcher's pool)

    @property
    def family(self) -> ModelFamily:
        return self.engine.family


@dataclass(frozen=True)
class Scored:
    raw: np.ndarray  # one raw score per distinct document (float64)
    tokens: int  # tokens (and image patches) run through the model; cache hits cost none
    cached: int  # distinct documents answered from a cache


class ScoringPath(Protocol):
    kind: ScoringKind

    async def score(self, target: Target, job: ScoringJob) -> Scored:
        """One raw score per distinct document of `job`."""
        ...


def text_of(document: Loaded) -> str:
    if not isinstance(document, TextDocument):
        raise InvalidInput(f"this model reads text only, not an {document.kind}")
    return document.text


def chars(document: Loaded) -> int:
    """Characters for the admission estimate; an image's cost is counted when it is queued."""
    return len(document.text) if isinstance(document, TextDocument) else 0


__all__ = [
    "Admit",
    "Prepare",
    "ScoringJob",
    "ScoringKind",
    "ScoringPath",
    "Scored",
    "Submit",
    "Target",
]
