"""The embedding path: bi-encoders and CLIP/SigLIP, through the embedding cache.

A bi-encoder embeds the query and each document apart, so a document's embedding does not
depend on the query: computed once, it serves every later query. This path looks up the
query's and every distinct document's embedding (keyed by model, long-document policy, role
and content hash), plans and runs only what is missing (decoding only the images that must be
encoded), stores what it computed, and scores each document by its best chunk.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from rerankd.cache import EmbeddingCache, embedding_key
from rerankd.documents import Loaded
from rerankd.families.base import EmbeddingFamily, ModelFamily
from rerankd.images import ImageLoader
from rerankd.metrics import Metrics
from rerankd.scoring.base import Scored, ScoringJob, ScoringKind, Target
from rerankd.throttle import ThrottledLog

logger = logging.getLogger(__name__)


def embedding_family(family: ModelFamily) -> EmbeddingFamily:
    """The family as one that embeds texts apart (what dense retrieval needs), or a refusal."""
    if not isinstance(family, EmbeddingFamily):
        raise ValueError(
            f"{family.model.name} is not a bi-encoder; candidates need an embedding model"
        )
    return family


def split(plan_owners: np.ndarray, outputs: np.ndarray, count: int) -> list[np.ndarray]:
    """Rows per owner: index 0 is the query (owner -1), then documents 0..count-1."""
    return [outputs[plan_owners == owner] for owner in range(-1, count)]


def stack(query: np.ndarray, documents: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The (outputs, owners) a plan over all documents would have produced."""
    owners = np.concatenate(
        [np.array([-1])] + [np.full(len(rows), i) for i, rows in enumerate(documents)]
    ).astype(np.int64)
    return np.concatenate([query, *documents]), owners


class EmbeddingPath:
    kind: ScoringKind = "embedding"

    def __init__(
        self, cache: EmbeddingCache | None, images: ImageLoader, metrics: Metrics | None
    ) -> None:
        self.cache = cache
        self.images = images
        self.metrics = metrics
        self._widths: dict[tuple[object, ...], int] = {}  # each model's embedding width
        self._width_log = ThrottledLog(logger)

    async def score(self, target: Target, job: ScoringJob) -> Scored:
        """The family's plan (run in a worker thread) puts the query first with owner -1;
        its `combine_rows` turns (embeddings, owners) into one raw score per document."""
        family = embedding_family(target.family)
        model, identity, inputs = target.name, target.identity, job.inputs()
        query, documents, engine = job.query, job.documents, target.engine
        keys = [embedding_key(identity, inputs, "query", query.digest)] + [
            embedding_key(identity, inputs, "document", d.digest) for _, d in documents
        ]
        found: list[np.ndarray | None] = (
            await self.cache.get_many(keys) if self.cache else [None] * len(keys)
        )
        if identity not in self._widths:
            found[0] = None  # the first request here: encode the query, learn the width
        found = self._same_width(identity, found)
        from_cache = {i for i in range(len(documents)) if found[i + 1] is not None}
        tokens = 0
        for _ in range(2):  # a second pass only for cached rows the first showed to be foreign
            missing = [i for i in range(len(documents)) if found[i + 1] is None]
            if found[0] is not None and not missing:
                break
            todo = await self.images.decode_request(query, [documents[i] for i in missing])
            built = await asyncio.to_thread(
                engine.plan, todo[0], todo[1:], job.policy, job.instruction, job.options
            )
            items, owners = built.sequences, built.owners
            keep = owners >= 0 if found[0] is not None else np.ones(len(owners), dtype=bool)
            run = [item for item, kept in zip(items, keep, strict=True) if kept]
            outputs = await target.submit(run)
            tokens += sum(len(item) for item in run)
            rows = split(owners[keep], outputs, len(missing))
            fresh: dict[str, np.ndarray] = {}
            if found[0] is None:
                found[0] = fresh[keys[0]] = rows[0][0:1]
                self._count(model, query, 1)
            for position, i in enumerate(missing):
                found[i + 1] = fresh[keys[i + 1]] = rows[position + 1]
                self._count(model, documents[i][1], 1)
            if self.cache:
                await self.cache.set_many(fresh)
            if fresh:
                self._widths[identity] = next(iter(fresh.values())).shape[1]
            found = self._same_width(identity, found)
            from_cache = {i for i in from_cache if found[i + 1] is not None}
        query_row = found[0]
        assert query_row is not None
        outputs, owners = stack(query_row, [row for row in found[1:] if row is not None])
        return Scored(
            raw=family.combine_rows(outputs, owners, len(documents)),
            tokens=tokens,
            cached=len(from_cache),
        )

    def _same_width(
        self, identity: tuple[object, ...], found: list[np.ndarray | None]
    ) -> list[np.ndarray | None]:
        """Cached rows of another width than this model's are misses (a value written by
        something else, well-formed but not this model's): never a shape error, a 500."""
        widths = {row.shape[1] for row in found if row is not None}
        expected = self._widths.get(identity)
        if expected is None and len(widths) <= 1:
            return found
        kept = [row if row is not None and row.shape[1] == expected else None for row in found]
        dropped = sum(row is not None for row in found) - sum(row is not None for row in kept)
        if dropped:
            if self.metrics is not None:
                self.metrics.cache_invalid.labels("embedding").inc(dropped)
            self._width_log.warn(
                "%d cached embeddings of another width, treated as misses", dropped
            )
        return kept

    def _count(self, model: str, document: Loaded, count: int) -> None:
        if self.metrics is not None:
            self.metrics.embedded.labels(model, document.kind).inc(count)
