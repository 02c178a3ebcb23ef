"""`RerankService`: the one object every API dialect calls.

It owns the model registry (engines and their batchers) and the score cache, and turns a
`RerankRequest` into a `RerankResult`: check limits, dedupe documents, read the cache,
tokenize off the event loop, queue the sequences, combine chunk scores, write the cache, rank.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import numpy as np

from rerankd.admission import estimate_tokens
from rerankd.cache import MemoryCache, RedisCache, ScoreCache, TieredCache, score_key
from rerankd.config import Settings
from rerankd.engine import LongDocPolicy
from rerankd.errors import NotReady, PayloadTooLarge, RequestTimeout
from rerankd.metrics import Metrics
from rerankd.ranking import RankedDocument, check_inputs, check_top_n, rank
from rerankd.registry import ModelHandle, ModelRegistry
from rerankd.scripts import script_notice

logger = logging.getLogger(__name__)


@dataclass
class RerankRequest:
    """A rerank call in dialect-free form."""

    query: str
    documents: list[str]
    model: str | None = None
    top_n: int | None = None
    clamp_top_n: bool = False  # Cohere semantics: a top_n above the count means all
    raw_scores: bool = False
    strategy: str | None = None  # None: the server's default long-document strategy
    max_tokens_per_doc: int | None = None
    max_chunks_per_doc: int | None = None
    truncation_direction: str = "right"
    allow_truncation: bool = True
    instruction: str | None = None  # None: the model's default (families that take one)
    priority: int = 0  # lower runs earlier (vLLM's convention); see rerankd.batching


@dataclass
class RerankResult:
    model: str
    results: list[RankedDocument]
    documents: int
    tokens: int  # tokens run through the model for this request (cache hits cost none)
    cached: int  # documents answered from the cache
    warnings: list[str] = field(default_factory=list)  # sent as `Warning` headers


class RerankService:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.registry = ModelRegistry(settings, self.metrics)
        self.cache: ScoreCache | None = None
        self.ready = False

    # Lifecycle -------------------------------------------------------------------------

    def load(self) -> None:
        """Read the registrations and load the start-up models (slow: runs in a thread)."""
        self.registry.start()
        self.cache = self._make_cache()
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        await self.registry.close()
        if self.cache is not None:
            await self.cache.close()

    def _make_cache(self) -> ScoreCache | None:
        memory = (
            MemoryCache(self.settings.cache_entries, self.metrics)
            if self.settings.cache_entries
            else None
        )
        shared = (
            RedisCache(self.settings.redis_url, self.settings.redis_ttl, self.metrics)
            if self.settings.redis_url
            else None
        )
        if memory is not None:
            self.metrics.cache_entries.set_function(lambda: len(memory))
        if memory is None and shared is None:
            return None
        return TieredCache(memory, shared)

    # Requests --------------------------------------------------------------------------

    def model(self, name: str | None) -> ModelHandle:
        """The ready model a request naming `name` would use (looked up, not held)."""
        if not self.ready:
            raise NotReady("models are still loading")
        with self.registry.lease(name) as handle:
            return handle

    async def rerank(self, request: RerankRequest) -> RerankResult:
        if not self.ready:
            raise NotReady("models are still loading")
        # The lease keeps the model from being freed until this request is done with it.
        with self.registry.lease(request.model) as served:
            return await self._rerank_within_deadline(request, served)

    async def _rerank_within_deadline(
        self, request: RerankRequest, served: ModelHandle
    ) -> RerankResult:
        try:
            return await asyncio.wait_for(
                self._rerank(request, served), self.settings.request_timeout
            )
        except TimeoutError:  # asyncio.wait_for raises the builtin since 3.11
            self.metrics.rejected.labels("timeout").inc()
            raise RequestTimeout(
                f"the request took longer than {self.settings.request_timeout:g}s"
            ) from None

    async def rerank_many(self, requests: list[RerankRequest]) -> list[RerankResult]:
        """Several queries at once: their sequences share batches."""
        return list(await asyncio.gather(*(self.rerank(r) for r in requests)))

    async def _rerank(self, request: RerankRequest, served: ModelHandle) -> RerankResult:
        query, documents = check_inputs(request.query, request.documents)
        self._check_limits(query, documents)
        top_n = check_top_n(request.top_n, len(documents), clamp=request.clamp_top_n)
        policy = self._policy(request)
        instruction = served.engine.instruction_for(request.instruction)
        if logger.isEnabledFor(logging.DEBUG):  # text is logged only when debug is asked for
            logger.debug("rerank input", extra={"query": query, "documents": documents})

        unique: dict[str, int] = {}
        for document in documents:
            unique.setdefault(document, len(unique))
        texts = list(unique)
        raw = np.empty(len(texts), dtype=np.float64)
        inputs = (*policy.cache_key(), instruction)  # everything besides the texts that scores see
        keys = [score_key(served.identity, inputs, query, text) for text in texts]
        found = await self.cache.get_many(keys) if self.cache else [None] * len(texts)
        missing = [i for i, value in enumerate(found) if value is None]
        for i, value in enumerate(found):
            if value is not None:
                raw[i] = value

        tokens = 0
        if missing:
            engine = served.engine
            chunks = policy.max_chunks_per_doc if policy.strategy == "chunk" else 1
            served.batcher.admit(
                estimate_tokens(
                    len(query), (len(texts[i]) for i in missing), engine.max_length, chunks
                )
            )  # refuse an overloaded request before paying for its tokenization
            plan = await asyncio.to_thread(
                engine.plan, query, [texts[i] for i in missing], policy, instruction
            )
            outputs = await served.batcher.submit(plan.sequences, request.priority)
            scores = plan.combine(outputs)
            raw[missing] = scores
            tokens = plan.tokens
            if self.cache:
                await self.cache.set_many(
                    {keys[i]: float(s) for i, s in zip(missing, scores, strict=True)}
                )

        per_document = raw[[unique[d] for d in documents]]
        final = per_document if request.raw_scores else served.engine.normalize(per_document)
        notice = script_notice(served.name, served.engine.model.source, query, documents)
        return RerankResult(
            model=served.name,
            results=rank(final, documents, top_n),
            documents=len(documents),
            tokens=tokens,
            cached=len(texts) - len(missing),
            warnings=[notice] if notice else [],
        )

    def check_document_count(self, count: int) -> None:
        if count > self.settings.max_documents:
            raise PayloadTooLarge(
                f"{count} documents sent; at most {self.settings.max_documents} per request"
            )

    def _check_limits(self, query: str, documents: list[str]) -> None:
        s = self.settings
        self.check_document_count(len(documents))
        if len(query) > s.max_query_chars:
            raise PayloadTooLarge(f"query has {len(query)} characters; at most {s.max_query_chars}")
        for index, document in enumerate(documents):
            if len(document) > s.max_document_chars:
                raise PayloadTooLarge(
                    f"documents[{index}] has {len(document)} characters; at most {s.max_document_chars}"
                )

    def _policy(self, request: RerankRequest) -> LongDocPolicy:
        s = self.settings
        return LongDocPolicy(
            strategy=request.strategy or s.long_document_strategy,  # type: ignore[arg-type]
            max_tokens_per_doc=request.max_tokens_per_doc,
            # A client may ask for fewer chunks than the server allows, never more.
            max_chunks_per_doc=min(
                request.max_chunks_per_doc or s.max_chunks_per_doc, s.max_chunks_per_doc
            ),
            overlap=s.chunk_overlap,
            direction=request.truncation_direction,  # type: ignore[arg-type]
            allow_truncation=request.allow_truncation,
        )

    def describe(self) -> list[dict[str, object]]:
        return [
            {**handle.engine.describe(), **handle.describe(), "name": handle.uid}
            for handle in self.registry.handles()
            if handle.engines
        ]
