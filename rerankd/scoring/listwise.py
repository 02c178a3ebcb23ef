"""The listwise path: the whole (query, ordered document list) is one unit of work.

A listwise model (jina-reranker-v3) reads many documents in one prompt, so a document's score
depends on the query, the instruction and every other document of the request, in order.
The cache is keyed on all of that: one entry per document, under the digest of the whole
ordered list, and a request is answered from the cache only when every entry is there. The
request's blocks (prompts) go to the scheduler as items whose `len()` is their tokens; an item
is never split, so a block's scores do not depend on what it is batched with.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rerankd.admission import estimate_tokens
from rerankd.cache import ScoreCache, score_key
from rerankd.documents import Loaded, TextDocument
from rerankd.engine.plan import LongDocPolicy
from rerankd.errors import InvalidInput
from rerankd.families.base import ModelFamily
from rerankd.families.listwise import ListwiseFamily


@dataclass(frozen=True)
class ListScored:
    raw: np.ndarray  # one raw score per distinct document (float64)
    tokens: int  # tokens run through the model (0 when the cache answered)
    cached: int  # documents answered from the cache (all or none)


def list_digest(documents: list[Loaded]) -> str:
    """The ordered list's identity: its documents' content hashes, in order."""
    joined = "\x1f".join(d.digest for d in documents)
    return hashlib.sha256(joined.encode()).hexdigest()


def _text(document: Loaded) -> str:
    if not isinstance(document, TextDocument):
        raise InvalidInput(f"this model reads text only, not an {document.kind}")
    return document.text


def _chars(document: Loaded) -> int:
    return len(document.text) if isinstance(document, TextDocument) else 0


class ListwiseScorer:
    """Scores a request's distinct documents with a listwise family, through the score cache."""

    def __init__(self, cache: ScoreCache | None) -> None:
        self.cache = cache

    async def score(
        self,
        *,
        identity: tuple[object, ...],
        inputs: tuple[object, ...],
        family: ModelFamily,
        max_length: int,
        query: Loaded,
        documents: list[Loaded],
        policy: LongDocPolicy,
        instruction: str | None,
        submit: Callable[[list[Any]], Awaitable[np.ndarray]],
        admit: Callable[[int], None],
    ) -> ListScored:
        """`inputs`: everything besides the texts a score depends on (policy, instruction)."""
        assert isinstance(family, ListwiseFamily), "the listwise path needs a ListwiseFamily"
        whole = ("listwise", inputs, list_digest(documents))
        keys = [
            score_key(identity, (*whole, i), query.digest, d.digest)
            for i, d in enumerate(documents)
        ]
        found = await self.cache.get_many(keys) if self.cache else [None] * len(keys)
        if found and all(value is not None for value in found):
            return ListScored(np.asarray(found, dtype=np.float64), 0, len(documents))
        chunks = policy.max_chunks_per_doc if policy.strategy == "chunk" else 1
        # Refuse an overloaded request before paying for its tokenization.
        admit(estimate_tokens(_chars(query), (_chars(d) for d in documents), max_length, chunks))
        plan = await asyncio.to_thread(
            family.plan_blocks, _text(query), [_text(d) for d in documents], policy, instruction
        )
        raw = family.combine(await submit(plan.blocks), plan)
        if self.cache:
            await self.cache.set_many({key: float(s) for key, s in zip(keys, raw, strict=True)})
        return ListScored(raw, plan.tokens, 0)
