"""`RerankService`: the one object every API dialect calls.

It owns the served models (engines and their batchers) and the score cache, and turns a
`RerankRequest` into a `RerankResult`: check limits, dedupe documents, read the cache,
tokenize off the event loop, queue the sequences, combine chunk scores, write the cache, rank.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from rerankd.admission import estimate_tokens
from rerankd.batching import DynamicBatcher
from rerankd.cache import MemoryCache, RedisCache, ScoreCache, TieredCache, score_key
from rerankd.config import Settings
from rerankd.engine import Engine, LongDocPolicy, Sequence, load_engine
from rerankd.errors import ModelNotFound, NotReady, PayloadTooLarge, RequestTimeout
from rerankd.metrics import Metrics
from rerankd.models import ModelSpec, resolve
from rerankd.ranking import RankedDocument, check_inputs, check_top_n, rank
from rerankd.scripts import script_notice

logger = logging.getLogger(__name__)

# What clients send when the user named no model: infinity-client's default, and empty.
_DEFAULT_MODEL_NAMES = frozenset({"", "default/not-specified"})


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


@dataclass
class RerankResult:
    model: str
    results: list[RankedDocument]
    documents: int
    tokens: int  # tokens run through the model for this request (cache hits cost none)
    cached: int  # documents answered from the cache
    warnings: list[str] = field(default_factory=list)  # sent as `Warning` headers


@dataclass
class ServedModel:
    """One model as the server runs it: its replicas behind one batcher."""

    name: str
    engines: list[Engine]
    batcher: DynamicBatcher[Sequence]
    load_seconds: float
    identity: tuple[object, ...] = field(default=())

    @property
    def engine(self) -> Engine:
        return self.engines[0]


class RerankService:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.models: dict[str, ServedModel] = {}
        self.cache: ScoreCache | None = None
        self.ready = False

    # Lifecycle -------------------------------------------------------------------------

    def load(self) -> None:
        """Load every model (slow: runs in a thread at start-up), then start the batchers."""
        devices = self.settings.devices
        for text in self.settings.model:
            spec = ModelSpec.parse(
                text, family=self.settings.family, instruction=self.settings.instruction
            )
            if spec.name in self.models:
                raise ValueError(
                    f"two models are served as {spec.name!r}; give one a name with SPEC=NAME"
                )
            started = time.perf_counter()
            resolved = resolve(spec)
            engines = [
                load_engine(resolved, self.settings.engine_options(device))
                for device in devices
                for _ in range(self.settings.replicas)
            ]
            seconds = time.perf_counter() - started
            self.metrics.load_seconds.labels(spec.name).set(seconds)
            batcher = DynamicBatcher(
                [engine.run for engine in engines],
                max_batch_tokens=self.settings.batch_tokens,
                max_batch_size=self.settings.max_batch_size,
                max_queue_tokens=self.settings.max_queue_tokens,
                # Half the deadline for the wait: the speed is measured while batches run, and
                # a request also needs time for its own tokens, tokenizing and the response.
                max_queue_seconds=self.settings.request_timeout / 2,
                max_wait_ms=self.settings.batch_wait_ms,
                observer=self.metrics.batch_observer(spec.name),
                name=spec.name,
            )
            identity = (resolved.name, resolved.revision, resolved.family, engines[0].max_length)
            self.models[spec.name] = ServedModel(spec.name, engines, batcher, seconds, identity)
            logger.info(
                "serving %s (%s) as %r", resolved.source, engines[0].backend.description, spec.name
            )
        for served in self.models.values():
            served.batcher.start()
        self.cache = self._make_cache()
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        for served in self.models.values():
            await asyncio.to_thread(served.batcher.stop)
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

    def model(self, name: str | None) -> ServedModel:
        if not self.ready:
            raise NotReady("models are still loading")
        if name is None or name in _DEFAULT_MODEL_NAMES:
            return next(iter(self.models.values()))
        served = self.models.get(name)
        if served is None:
            # Clients often send the hub id; accept it when it is what a served model came from.
            served = next((m for m in self.models.values() if m.engine.model.source == name), None)
        if served is None:
            names = ", ".join(repr(n) for n in self.models)
            raise ModelNotFound(f"model {name!r} is not served here; served models: {names}")
        return served

    async def rerank(self, request: RerankRequest) -> RerankResult:
        try:
            return await asyncio.wait_for(self._rerank(request), self.settings.request_timeout)
        except TimeoutError:  # asyncio.wait_for raises the builtin since 3.11
            self.metrics.rejected.labels("timeout").inc()
            raise RequestTimeout(
                f"the request took longer than {self.settings.request_timeout:g}s"
            ) from None

    async def rerank_many(self, requests: list[RerankRequest]) -> list[RerankResult]:
        """Several queries at once: their sequences share batches."""
        return list(await asyncio.gather(*(self.rerank(r) for r in requests)))

    async def _rerank(self, request: RerankRequest) -> RerankResult:
        served = self.model(request.model)
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
            outputs = await served.batcher.submit(plan.sequences)
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
            {
                **served.engine.describe(),
                "name": name,
                "replicas": len(served.engines),
                "load_seconds": round(served.load_seconds, 3),
            }
            for name, served in self.models.items()
        ]
