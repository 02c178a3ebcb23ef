"""Late interaction (ColBERT): token vectors per document, cached; MaxSim against the query.

A document's token vectors do not depend on the query, so they are cached (memory, and Redis
when configured) under the model's identity, the request's long-document settings and the
document's content hash: a document seen before costs no encoding, and a request whose
documents are all cached runs only its query (whose vectors are cached too).

The batcher's unit is one item (the query, or one chunk of a document), and a batch answers
one row per item: an object array holding each item's kept vectors as float32 [n, dim] (items
have different lengths; the family pads the batch, runs it, and cuts each row back to its own
positions). A document's raw score is its best chunk's MaxSim, computed on float32 vectors.

The memory tier keeps float32 vectors, so a cache hit in this process scores exactly as the
first request did; Redis stores float16 (half the bytes), so a document read back from Redis
by another process scores within float16's rounding of the float32 score (measured in the
tests; far below what changes a ranking).
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from rerankd.admission import CHARS_PER_TOKEN
from rerankd.cache import (
    MAX_DIM,
    MAX_ROWS,
    MAX_ROWS_BYTES,
    Cache,
    Codec,
    InvalidCached,
    embedding_key,
)
from rerankd.engine.plan import LongDocPolicy
from rerankd.families.base import ModelFamily
from rerankd.families.colbert import Colbert, maxsim
from rerankd.metrics import Metrics
from rerankd.scoring.base import Scored, ScoringJob, ScoringKind, Target, text_of


@dataclass(frozen=True)
class TokenVectors:
    """One input's token vectors: one float32 [n, dim] array per chunk (a query has one)."""

    chunks: tuple[np.ndarray, ...]

    @property
    def nbytes(self) -> int:
        return sum(chunk.nbytes for chunk in self.chunks)


_TAG = b"t1"  # the format and its version: anything else read back is not served


def dump_vectors(value: TokenVectors) -> bytes:
    """Compact: a format tag, chunk count, dimension, each chunk's length, float16 vectors."""
    dim = value.chunks[0].shape[1] if value.chunks else 0
    lengths = [len(chunk) for chunk in value.chunks]
    header = _TAG + struct.pack(f"<II{len(lengths)}I", len(lengths), dim, *lengths)
    body = b"".join(np.ascontiguousarray(c, dtype="<f2").tobytes() for c in value.chunks)
    return header + body


def load_vectors(data: bytes) -> TokenVectors:
    """The vectors, or `InvalidCached` for a value this version did not write (another
    format, a shape that does not fit its bytes or the bounds, a number that is not finite)."""
    if not data.startswith(_TAG) or len(data) < len(_TAG) + 8:
        raise InvalidCached(f"not token vectors of format {_TAG.decode()}")
    count, dim = struct.unpack_from("<II", data, len(_TAG))
    if count > MAX_ROWS or dim > MAX_DIM or (count and not dim):
        raise InvalidCached(f"token vectors of an impossible shape ({count} chunks x {dim})")
    offset = len(_TAG) + 8 + 4 * count
    if len(data) < offset:
        raise InvalidCached("token vectors cut short")
    lengths = struct.unpack_from(f"<{count}I", data, len(_TAG) + 8)
    size = 2 * sum(lengths) * dim
    if sum(lengths) > MAX_ROWS or size > MAX_ROWS_BYTES or len(data) != offset + size:
        raise InvalidCached(f"{len(data) - offset} bytes for {sum(lengths)} x {dim} vectors")
    chunks = []
    for length in lengths:
        flat = np.frombuffer(data, dtype="<f2", count=length * dim, offset=offset)
        chunk = flat.reshape(length, dim).astype(np.float32)
        if not np.isfinite(chunk).all():
            raise InvalidCached("token vectors that are not finite")
        chunks.append(chunk)
        offset += 2 * length * dim
    return TokenVectors(tuple(chunks))


TOKEN_VECTORS: Codec[TokenVectors] = Codec(
    "token_vectors", dump_vectors, load_vectors, lambda value: value.nbytes
)
VectorCache = Cache[TokenVectors]


def late_family(family: ModelFamily) -> Colbert:
    assert isinstance(family, Colbert), "the late-interaction path needs a ColBERT family"
    return family


def best_chunk(query: np.ndarray, document: TokenVectors) -> float:
    """A document's raw score: its best chunk's MaxSim."""
    return max(maxsim(query, chunk) for chunk in document.chunks)


class LateInteractionPath:
    """Reads and writes the token-vector cache, encodes what is missing, scores by MaxSim."""

    kind: ScoringKind = "late_interaction"

    def __init__(self, cache: VectorCache | None, metrics: Metrics | None) -> None:
        self.cache = cache
        self.metrics = metrics

    async def score(self, target: Target, job: ScoringJob) -> Scored:
        family = late_family(target.family)
        model, identity, inputs = target.name, target.identity, job.inputs()
        query, documents, policy = job.query, job.loaded, job.policy
        keys = [embedding_key(identity, inputs, "query", query.digest)] + [
            embedding_key(identity, inputs, "document", d.digest) for d in documents
        ]
        found: list[TokenVectors | None] = (
            await self.cache.get_many(keys) if self.cache else [None] * len(keys)
        )
        missing = [i for i in range(len(documents)) if found[i + 1] is None]
        tokens = 0
        if found[0] is None or missing:
            texts = [text_of(documents[i]) for i in missing]
            target.admit(_estimate(text_of(query), texts, found[0] is None))
            encode_query = found[0] is None
            items, owners = await asyncio.to_thread(
                _plan, family, text_of(query), texts, policy, encode_query
            )
            rows = await target.submit(items)
            tokens = sum(len(item) for item in items)
            grouped: dict[int, list[np.ndarray]] = {}
            for row, owner in zip(rows, owners, strict=True):
                grouped.setdefault(owner, []).append(row)
            fresh: dict[str, TokenVectors] = {}
            if encode_query:
                found[0] = fresh[keys[0]] = TokenVectors(tuple(grouped[-1]))
            for position, i in enumerate(missing):
                found[i + 1] = fresh[keys[i + 1]] = TokenVectors(tuple(grouped[position]))
            self._count(model, int(encode_query), len(missing))
            if self.cache:
                await self.cache.set_many(fresh)
        query_vectors = found[0]
        assert query_vectors is not None
        query_rows = query_vectors.chunks[0]
        raw = np.array(
            [best_chunk(query_rows, vectors) for vectors in found[1:] if vectors is not None],
            dtype=np.float64,
        )
        return Scored(raw=raw, tokens=tokens, cached=len(documents) - len(missing))

    def _count(self, model: str, queries: int, documents: int) -> None:
        if self.metrics is None:
            return
        if queries:
            self.metrics.late_encoded.labels(model, "query").inc(queries)
        if documents:
            self.metrics.late_encoded.labels(model, "document").inc(documents)


def _plan(
    family: Colbert,
    query: str,
    documents: list[str],
    policy: LongDocPolicy,
    encode_query: bool,
) -> tuple[list[Any], list[int]]:
    """Items to run (the query's owner is -1, a document's is its position in `documents`)."""
    items: list[Any] = [family.query_item(query)] if encode_query else []
    owners = [-1] * len(items)
    for position, chunks in enumerate(family.document_items(documents, policy)):
        items.extend(chunks)
        owners.extend([position] * len(chunks))
    return items, owners


def _estimate(query: str, documents: list[str], with_query: bool) -> int:
    """A cheap token estimate from characters, before tokenizing."""
    chars = (len(query) if with_query else 0) + sum(len(d) for d in documents)
    return int(chars / CHARS_PER_TOKEN) + 1
