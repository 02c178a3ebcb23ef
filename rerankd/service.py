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

from rerankd.batching import DynamicBatcher
from rerankd.cache import EMBEDDINGS, SCORES, EmbeddingCache, ScoreCache, score_key, tiered
from rerankd.config import Settings
from rerankd.documents import (
    Document,
    Loaded,
    Modalities,
    TextDocument,
    check_documents,
    check_modalities,
)
from rerankd.embeddings import Combine, EmbeddingScorer
from rerankd.engine import Engine, LongDocPolicy, load_engine
from rerankd.errors import ModelNotFound, NotReady, PayloadTooLarge, RequestTimeout
from rerankd.families import EmbeddingFamily
from rerankd.images import ImageLoader
from rerankd.metrics import Metrics
from rerankd.models import ModelSpec, resolve
from rerankd.ranking import RankedDocument, check_top_n, rank

logger = logging.getLogger(__name__)

# What clients send when the user named no model: infinity-client's default, and empty.
_DEFAULT_MODEL_NAMES = frozenset({"", "default/not-specified"})


@dataclass
class RerankRequest:
    """A rerank call in dialect-free form; the edges turn plain strings into documents."""

    query: Document
    documents: list[Document]
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


@dataclass
class ServedModel:
    """One model as the server runs it: its replicas behind one batcher."""

    name: str
    engines: list[Engine]
    batcher: DynamicBatcher
    load_seconds: float
    identity: tuple = field(default=())

    @property
    def engine(self) -> Engine:
        return self.engines[0]


class RerankService:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.models: dict[str, ServedModel] = {}
        self.cache: ScoreCache | None = None
        self.images = ImageLoader(settings.image_policy())
        self.embedder = EmbeddingScorer(None, self.images, self.metrics)
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
        self.embedder.cache = self._make_embedding_cache()
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        for served in self.models.values():
            await asyncio.to_thread(served.batcher.stop)
        for cache in (self.cache, self.embedder.cache):
            if cache is not None:
                await cache.close()
        await self.images.close()

    def _make_cache(self) -> ScoreCache | None:
        s = self.settings
        return tiered(SCORES, s.cache_entries, s.redis_url, s.redis_ttl, self.metrics)

    def _make_embedding_cache(self) -> EmbeddingCache | None:
        s = self.settings
        if not any(_embeds(served.engine) for served in self.models.values()):
            return None
        return tiered(
            EMBEDDINGS, s.embedding_cache_mb << 20, s.redis_url, s.redis_ttl, self.metrics
        )

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
        query, documents = check_documents(request.query, request.documents)
        self._check_limits(query, documents)
        check_modalities(served.name, _modalities(served.engine), query, documents)
        top_n = check_top_n(request.top_n, len(documents), clamp=request.clamp_top_n)
        policy = self._policy(request)
        instruction = served.engine.instruction_for(request.instruction)
        if logger.isEnabledFor(logging.DEBUG):  # text is logged only when debug is asked for
            logger.debug(
                "rerank input",
                extra={"query": _loggable(query), "documents": [_loggable(d) for d in documents]},
            )
        loaded_query, loaded = await self.images.load(query, documents)
        inputs = (*policy.cache_key(), instruction)  # everything besides the texts that scores see

        unique: dict[str, int] = {}  # content hash -> position among the distinct documents
        firsts: list[tuple[int, Loaded]] = []  # each distinct document, with its first index
        for index, document in enumerate(loaded):
            if unique.setdefault(document.digest, len(unique)) == len(firsts):
                firsts.append((index, document))
        if _embeds(served.engine):
            engine = served.engine
            embedded = await self.embedder.score(
                model=served.name,
                identity=served.identity,
                inputs=inputs,
                query=loaded_query,
                documents=firsts,
                plan=lambda q, docs: engine.plan(q, docs, policy, instruction),
                submit=served.batcher.submit,
                combine=_combine_rows(engine),
            )
            raw, tokens, cached = embedded.raw, embedded.tokens, embedded.cached
        else:
            raw, tokens, cached = await self._scores(
                served, loaded_query, firsts, inputs, policy, instruction
            )

        per_document = raw[[unique[d.digest] for d in loaded]]
        final = per_document if request.raw_scores else served.engine.normalize(per_document)
        return RerankResult(
            model=served.name,
            results=rank(final, documents, top_n),
            documents=len(documents),
            tokens=tokens,
            cached=cached,
        )

    async def _scores(
        self,
        served: ServedModel,
        query: Loaded,
        firsts: list[tuple[int, Loaded]],
        inputs: tuple,
        policy: LongDocPolicy,
        instruction: str | None,
    ) -> tuple[np.ndarray, int, int]:
        """Raw scores of the distinct documents through the score cache: (raw, tokens, cached)."""
        raw = np.empty(len(firsts), dtype=np.float64)
        keys = [score_key(served.identity, inputs, query.digest, d.digest) for _, d in firsts]
        found = await self.cache.get_many(keys) if self.cache else [None] * len(firsts)
        missing = [i for i, value in enumerate(found) if value is None]
        for i, value in enumerate(found):
            if value is not None:
                raw[i] = value
        tokens = 0
        if missing:
            todo = await self.images.decode_request(query, [firsts[i] for i in missing])
            plan = await asyncio.to_thread(
                served.engine.plan, todo[0], todo[1:], policy, instruction
            )
            outputs = await served.batcher.submit(plan.sequences)
            scores = plan.combine(outputs)
            raw[missing] = scores
            tokens = plan.tokens
            if self.cache:
                await self.cache.set_many(
                    {keys[i]: float(s) for i, s in zip(missing, scores, strict=True)}
                )
        return raw, tokens, len(firsts) - len(missing)

    def check_document_count(self, count: int) -> None:
        if count > self.settings.max_documents:
            raise PayloadTooLarge(
                f"{count} documents sent; at most {self.settings.max_documents} per request"
            )

    def _check_limits(self, query: Document, documents: list[Document]) -> None:
        s = self.settings
        self.check_document_count(len(documents))
        if isinstance(query, TextDocument) and len(query.text) > s.max_query_chars:
            raise PayloadTooLarge(
                f"query has {len(query.text)} characters; at most {s.max_query_chars}"
            )
        for index, document in enumerate(documents):
            if isinstance(document, TextDocument) and len(document.text) > s.max_document_chars:
                raise PayloadTooLarge(
                    f"documents[{index}] has {len(document.text)} characters; at most {s.max_document_chars}"
                )

    def _policy(self, request: RerankRequest) -> LongDocPolicy:
        s = self.settings
        return LongDocPolicy(
            strategy=request.strategy or s.long_document_strategy,  # type: ignore[arg-type]
            max_tokens_per_doc=request.max_tokens_per_doc,
            max_chunks_per_doc=request.max_chunks_per_doc or s.max_chunks_per_doc,
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


def _loggable(document: Document) -> object:
    """Text as it is; an image as a short marker (its base64 is no use in a log)."""
    return document.text if isinstance(document, TextDocument) else "<image>"


def _modalities(engine: Engine) -> Modalities:
    return engine.family.modalities


def _embeds(engine: Engine) -> bool:
    return engine.family.embeds


def _combine_rows(engine: Engine) -> Combine:
    family = engine.family
    assert isinstance(family, EmbeddingFamily)
    return family.combine_rows
