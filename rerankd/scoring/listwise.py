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

import numpy as np

from rerankd.admission import estimate_tokens
from rerankd.cache import ScoreCache, score_key
from rerankd.documents import Loaded
from rerankd.families.base import ModelFamily
from rerankd.families.listwise import ListwiseFamily
from rerankd.scoring.base import Scored, ScoringJob, ScoringKind, Target, chars, text_of


def list_digest(documents: list[Loaded]) -> str:
    """The ordered list's identity: its documents' content hashes, in order."""
    joined = "\x1f".join(d.digest for d in documents)
    return hashlib.sha256(joined.encode()).hexdigest()


def listwise_family(family: ModelFamily) -> ListwiseFamily:
    assert isinstance(family, ListwiseFamily), "the listwise path needs a ListwiseFamily"
    return family


class ListwisePath:
    """Scores a request's distinct documents with a listwise family, through the score cache."""

    kind: ScoringKind = "listwise"

    def __init__(self, cache: ScoreCache | None) -> None:
        self.cache = cache

    async def score(self, target: Target, job: ScoringJob) -> Scored:
        family = listwise_family(target.family)
        query, documents, policy = job.query, job.loaded, job.policy
        whole = ("listwise", job.inputs(), list_digest(documents))
        keys = [
            score_key(target.identity, (*whole, i), query.digest, d.digest)
            for i, d in enumerate(documents)
        ]
        found = await self.cache.get_many(keys) if self.cache else [None] * len(keys)
        if found and all(value is not None for value in found):
            return Scored(np.asarray(found, dtype=np.float64), 0, len(documents))
        chunks = policy.max_chunks_per_doc if policy.strategy == "chunk" else 1
        # Refuse an overloaded request before paying for its tokenization.
        target.admit(
            estimate_tokens(
                chars(query), (chars(d) for d in documents), target.engine.max_length, chunks
            )
        )
        plan = await asyncio.to_thread(
            family.plan_blocks,
            text_of(query),
            [text_of(d) for d in documents],
            policy,
            job.instruction,
        )
        raw = family.combine(await target.submit(plan.blocks), plan)
        if self.cache:
            await self.cache.set_many({key: float(s) for key, s in zip(keys, raw, strict=True)})
        return Scored(raw, plan.tokens, 0)
