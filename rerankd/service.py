"""`RerankService`: the one object every API dialect calls.

It owns the model registry (engines and their batchers) and the scoring paths with their
caches, and turns a `RerankRequest` into a `RerankResult`: check limits, dedupe documents,
hand the distinct ones to the path the model's family names (rerankd.scoring), calibrate,
rank. It never asks what shape a model is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rerankd.cache import EMBEDDINGS, SCORES, ScoreCache, cache_secret, tiered
from rerankd.calibration.model import Calibration
from rerankd.config import Settings
from rerankd.documents import Document, Loaded, TextDocument, check_documents, check_modalities
from rerankd.engine import LongDocPolicy
from rerankd.errors import InvalidInput, NotReady, PayloadTooLarge, RequestTimeout
from rerankd.images import ImageLoader
from rerankd.metrics import Metrics
from rerankd.ranking import RankedDocument, check_min_relevance, check_top_n, rank
from rerankd.registry import ModelHandle, ModelRegistry
from rerankd.scoring import Scored, ScoringJob, ScoringPaths, Target
from rerankd.scoring.late_interaction import TOKEN_VECTORS
from rerankd.scripts import script_notice
from rerankd.spans import SpanOptions, pieces
from rerankd.spans import best as span_best
from rerankd.spans import windows as span_windows

logger = logging.getLogger(__name__)


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
    options: dict[str, object] = field(default_factory=dict)  # a family's extension fields
    priority: int = 0  # lower runs earlier (vLLM's convention); see rerankd.batching
    min_relevance: float | None = None  # drop results scored below it (before top_n)
    return_spans: bool = False  # each result carries its best sentence-aligned spans
    max_spans: int | None = None  # spans per document (None: the server's limit)


@dataclass
class RerankResult:
    model: str
    results: list[RankedDocument]
    documents: int
    tokens: int  # tokens run through the model for this request (cache hits cost none)
    cached: int  # documents answered from the cache
    spans: int = 0  # span windows scored (their tokens are in `tokens`)
    warnings: list[str] = field(default_factory=list)  # sent as `Warning` headers


class RerankService:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.registry = ModelRegistry(settings, self.metrics)
        self.images = ImageLoader(settings.image_policy())
        self.paths = ScoringPaths(self.images, self.metrics)  # caches are made by `load`
        self.ready = False

    # Lifecycle -------------------------------------------------------------------------

    def load(self) -> None:
        """Read the registrations and load the start-up models (slow: runs in a thread)."""
        self.registry.start()
        s = self.settings
        secret = cache_secret(s.server_secret, s.credential_keys(), bool(s.redis_url))
        url, ttl = s.redis_url, s.redis_ttl
        self.paths = ScoringPaths(
            self.images,
            self.metrics,
            scores=self._make_cache(secret),
            embeddings=tiered(
                EMBEDDINGS, s.embedding_cache_mb << 20, url, ttl, self.metrics, secret=secret
            ),
            vectors=tiered(
                TOKEN_VECTORS, s.token_vector_cache_mb << 20, url, ttl, self.metrics, secret=secret
            ),
        )
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        await self.registry.close()
        await self.paths.close()
        await self.images.close()

    def _make_cache(self, secret: bytes) -> ScoreCache | None:
        s = self.settings
        cache = tiered(
            SCORES, s.cache_entries, s.redis_url, s.redis_ttl, self.metrics, secret=secret
        )
        memory = cache.memory if cache is not None else None
        if memory is not None:
            self.metrics.gauge_function(self.metrics.cache_entries, lambda: len(memory))
        return cache

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
        query, documents = check_documents(request.query, request.documents)
        self._check_limits(query, documents)
        check_modalities(served.name, served.engine.family.modalities, query, documents)
        top_n = check_top_n(request.top_n, len(documents), clamp=request.clamp_top_n)
        policy = self._policy(request)
        min_relevance = check_min_relevance(request.min_relevance)
        served.engine.instruction_for(request.instruction)  # a model that takes none: 400 now
        served.engine.family.options_for(request.options)  # bad family options: 400 now
        if logger.isEnabledFor(logging.DEBUG):  # text is logged only when debug is asked for
            logger.debug(
                "rerank input",
                extra={"query": _loggable(query), "documents": [_loggable(d) for d in documents]},
            )
        loaded_query, loaded = await self.images.load(query, documents)

        unique: dict[str, int] = {}  # content hash -> position among the distinct documents
        firsts: list[tuple[int, Loaded]] = []  # each distinct document, with its first index
        for index, document in enumerate(loaded):
            if unique.setdefault(document.digest, len(unique)) == len(firsts):
                firsts.append((index, document))
        scored = await self._distinct_scores(served, loaded_query, firsts, policy, request)
        raw, tokens, cached = scored.raw, scored.tokens, scored.cached

        per_document = raw[[unique[d.digest] for d in loaded]]
        calibration = None if request.raw_scores else served.calibration
        relevance = self._relevance(served, calibration, request.raw_scores)
        results = rank(
            relevance(per_document),
            documents,
            top_n,
            raw=per_document if calibration is not None else None,
            min_relevance=min_relevance,
        )
        windows = 0
        if request.return_spans:
            results, span_tokens, windows = await self._spans(
                served, loaded_query, documents, results, policy, request, relevance
            )
            tokens += span_tokens
        texts = [d.text for d in documents if isinstance(d, TextDocument)]
        query_text = query.text if isinstance(query, TextDocument) else ""
        notice = script_notice(served.name, served.engine.model.source, query_text, texts)
        return RerankResult(
            model=served.name,
            results=results,
            documents=len(documents),
            tokens=tokens,
            cached=cached,
            spans=windows,
            warnings=[notice] if notice else [],
        )

    @staticmethod
    def _relevance(
        served: ModelHandle, calibration: Calibration | None, raw: bool
    ) -> Callable[[np.ndarray], np.ndarray]:
        """Raw scores -> what a response reports: raw, calibrated, or the family's normal."""
        if raw:
            return lambda scores: scores
        if calibration is not None:
            return calibration.apply
        return served.engine.normalize

    async def _distinct_scores(
        self,
        served: ModelHandle,
        query: Loaded,
        firsts: list[tuple[int, Loaded]],
        policy: LongDocPolicy,
        request: RerankRequest,
    ) -> Scored:
        """Raw scores of distinct documents through the path the model's family names."""
        engine = served.engine
        job = ScoringJob(
            query=query,
            documents=firsts,
            policy=policy,
            instruction=engine.instruction_for(request.instruction),
            options=engine.family.options_for(request.options),
        )
        target = Target(
            name=served.name,
            identity=served.identity,
            engine=engine,
            submit=lambda items: served.batcher.submit(items, request.priority),
            admit=served.batcher.admit,
            prepare=lambda work, tokens, chars: served.batcher.prepare(
                work, tokens, chars, request.priority
            ),
        )
        return await self.paths.score(target, job)

    async def _spans(
        self,
        served: ModelHandle,
        query: Loaded,
        documents: list[Document],
        results: list[RankedDocument],
        policy: LongDocPolicy,
        request: RerankRequest,
        relevance: Callable[[np.ndarray], np.ndarray],
    ) -> tuple[list[RankedDocument], int, int]:
        """Each returned text document's best windows, scored by the model as documents
        (cached like them); bounded per document by the chunk limit. (results, tokens, windows)"""
        s = self.settings
        options = span_options(s, served.engine.max_length, request.max_spans, policy)
        tokenizer = served.engine.tokenizer

        def cut() -> list[list[tuple[int, int]]]:
            return [
                span_windows(pieces(d.text, tokenizer.offsets, options.max_tokens), options)
                if isinstance(d, TextDocument)
                else []
                for d in (documents[r.index] for r in results)
            ]

        cuts = await asyncio.to_thread(cut)
        unique: dict[str, int] = {}
        firsts: list[tuple[int, Loaded]] = []
        owners: list[list[int]] = []
        for r, found in zip(results, cuts, strict=True):
            document = documents[r.index]
            text = document.text if isinstance(document, TextDocument) else ""
            mine = []
            for start, end in found:
                window = TextDocument(text[start:end])
                if unique.setdefault(window.digest, len(unique)) == len(firsts):
                    firsts.append((len(firsts), window))
                mine.append(unique[window.digest])
            owners.append(mine)
        if not firsts:
            return [dataclasses.replace(r, spans=[]) for r in results], 0, 0
        window_policy = dataclasses.replace(policy, strategy="truncate", allow_truncation=True)
        scored = await self._distinct_scores(served, query, firsts, window_policy, request)
        scores = relevance(scored.raw)
        out = []
        for r, found, mine in zip(results, cuts, owners, strict=True):
            spans = span_best(found, scores[mine], options.max_spans) if found else []
            out.append(dataclasses.replace(r, spans=spans))
        return out, scored.tokens, len(firsts)

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


def span_options(
    settings: Settings, max_length: int, requested: int | None, policy: LongDocPolicy
) -> SpanOptions:
    """The server's span settings; a request may ask for fewer spans, never more, and a
    document yields no more windows than it may have chunks."""
    if requested is not None and requested < 1:
        raise InvalidInput("max_spans must be at least 1")
    return SpanOptions(
        window=settings.span_window,
        stride=settings.span_stride,
        max_tokens=max(1, min(settings.span_max_tokens, max_length // 2)),
        max_spans=min(requested or settings.max_spans, settings.max_spans),
        max_windows=policy.max_chunks_per_doc,
    )


def _loggable(document: Document) -> object:
    """Text as it is; an image as a short marker (its base64 is no use in a log)."""
    return document.text if isinstance(document, TextDocument) else "<image>"
