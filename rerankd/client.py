"""rerankd's own HTTP client: `Client` (blocking) and `AsyncClient` (asyncio), both on httpx.

Results are the same types the in-process `Reranker` returns (`RankedDocument`), and errors
the same exception tree (`rerankd.errors`), so code can switch between a server and an
in-process model without changing how it reads results or catches failures.

    >>> with Client("http://127.0.0.1:8000") as client:          # doctest: +SKIP
    ...     client.rerank("capital of France", ["Paris", "Rome"]).results[0].index
    0

Retries: a 429 or 503 is retried up to `max_retries` times, after the server's `Retry-After`
(seconds or an HTTP date) or, without one, after an exponential backoff. A `Retry-After`
longer than `max_retry_wait` is not waited for: the error is raised at once. Any other 4xx or
5xx raises the matching `RerankError` subclass carrying the server's message and status.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from rerankd.errors import (
    BackendFailed,
    InvalidInput,
    ModelNotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    RerankError,
    Unauthorized,
)
from rerankd.ranking import RankedDocument
from rerankd.spans import Span

__all__ = [
    "APIError",
    "AsyncClient",
    "Client",
    "Health",
    "ModelInfo",
    "RerankResponse",
    "Usage",
]

DEFAULT_TIMEOUT = 60.0
RETRY_STATUSES = frozenset({429, 503})


# Results ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    documents: int  # documents sent
    tokens: int  # tokens the model ran (cache hits cost none)
    cached: int  # documents answered from the server's score cache
    span_windows: int = 0  # windows scored for spans (their tokens are in `tokens`)


@dataclass(frozen=True, slots=True)
class RerankResponse:
    query: str
    model: str  # the served name that answered
    results: list[RankedDocument]  # best first; `.document` is the text that was sent
    usage: Usage
    warnings: tuple[str, ...] = ()  # why the scores may be unreliable (e.g. English-only model)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    revision: str | None = None
    max_length: int | None = None
    owned_by: str | None = None
    created: int | None = None


@dataclass(frozen=True, slots=True)
class Health:
    status: str  # "ok", "loading", "draining" or "failed"
    model_loaded: bool

    @property
    def ok(self) -> bool:
        return self.status == "ok"


BatchItem = tuple[str, Sequence[str]] | Mapping[str, Any]


# Errors -------------------------------------------------------------------------------------


class APIError(RerankError):
    """An error answer whose type has no closer match in `rerankd.errors` (a 405, a proxy's 502)."""


# The server's `error.type` names the exception exactly; the status is the fallback.
_BY_TYPE: dict[str, type[RerankError]] = {
    "invalid_request_error": InvalidInput,
    "payload_too_large": PayloadTooLarge,
    "model_not_found": ModelNotFound,
    "authentication_error": Unauthorized,
    "rate_limit_error": RateLimited,
    "overloaded_error": Overloaded,
    "not_ready": NotReady,
    "timeout_error": RequestTimeout,
    "backend_error": BackendFailed,
}
_BY_STATUS: dict[int, type[RerankError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Unauthorized,
    413: PayloadTooLarge,
    415: InvalidInput,
    422: InvalidInput,
    429: RateLimited,
    503: NotReady,
}


def error_from_response(response: httpx.Response) -> RerankError:
    """The exception for an error answer; `.status`, `.message` and `.body` are the server's."""
    body: Any
    try:
        body = response.json()
    except ValueError:
        body = response.text
    message, kind = _message_and_type(body)
    cls = _BY_TYPE.get(kind or "") or _BY_STATUS.get(response.status_code) or APIError
    error = cls(message or f"HTTP {response.status_code} {response.reason_phrase}")
    error.status = response.status_code
    error.body = body  # type: ignore[attr-defined]
    error.retry_after = retry_after(response)
    return error


def _message_and_type(body: Any) -> tuple[str, str | None]:
    """Read rerankd's `{"error": {...}}`, TEI's `{"error": str}` or FastAPI's `{"detail"}`."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("message", "")), error.get("type")
        if isinstance(error, str):
            return error, None
        if "detail" in body:
            return str(body["detail"]), None
    return (body if isinstance(body, str) else ""), None


def retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds from now, whether given as seconds or as an HTTP date."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# The part both clients share ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    path: str
    body: dict[str, Any] | None = None


class _Base:
    """Everything but I/O: building calls, reading answers, deciding on retries."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        *,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_retry_wait: float = 60.0,
        headers: Mapping[str, str] | None = None,
        transport: Any = None,
    ) -> None:
        """`api_key` goes out as `Authorization: Bearer`; `timeout` is seconds per request
        (or an `httpx.Timeout`); `transport` is an httpx transport of the matching kind."""
        if max_retries < 0:
            raise ValueError("max_retries must be at least 0")
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait
        auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = self._open(
            base_url=self.base_url,
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            headers={**auth, **(headers or {})},
            transport=transport,
        )

    def _open(self, **options: Any) -> Any:
        raise NotImplementedError

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before trying again, or None to stop and raise."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
            return None
        delay = retry_after(response)
        if delay is None:
            delay = self.backoff * 2**attempt
        return delay if delay <= self.max_retry_wait else None

    @staticmethod
    def _checked(response: httpx.Response) -> Any:
        if response.is_success:
            return response.json()
        raise error_from_response(response)

    @staticmethod
    def _rerank_call(
        query: str,
        documents: Sequence[str],
        model: str | None,
        top_n: int | None,
        raw_scores: bool,
        options: Mapping[str, Any],
    ) -> _Call:
        body: dict[str, Any] = {
            "query": query,
            "documents": list(documents),
            "return_documents": False,  # the client already has them; see _rerank_response
            "raw_scores": raw_scores,
        }
        body.update(
            {k: v for k, v in {"model": model, "top_n": top_n, **options}.items() if v is not None}
        )
        return _Call("POST", "/rerank", body)

    @staticmethod
    def _batch_call(
        queries: Sequence[BatchItem],
        model: str | None,
        raw_scores: bool,
        min_relevance: float | None = None,
        spans: bool = False,
    ) -> tuple[_Call, list[tuple[str, list[str]]]]:
        items = []
        sent = []
        for item in queries:
            if isinstance(item, Mapping):
                entry = {k: v for k, v in item.items() if v is not None}
                entry["documents"] = list(item["documents"])
            else:
                query, documents = item
                entry = {"query": query, "documents": list(documents)}
            items.append(entry)
            sent.append((entry["query"], entry["documents"]))
        body: dict[str, Any] = {"queries": items, "return_documents": False}
        body["raw_scores"] = raw_scores
        if model:
            body["model"] = model
        if min_relevance is not None:
            body["min_relevance"] = min_relevance
        if spans:
            body["return_spans"] = True
        return _Call("POST", "/batch_rerank", body), sent

    @staticmethod
    def _rerank_response(data: Mapping[str, Any], documents: Sequence[str]) -> RerankResponse:
        usage = data.get("usage") or {}
        return RerankResponse(
            query=data["query"],
            model=data["model"],
            results=[_ranked(r, documents) for r in data["results"]],
            usage=Usage(
                documents=int(usage.get("documents", len(documents))),
                tokens=int(usage.get("tokens", usage.get("total_tokens", 0))),
                cached=int(usage.get("cached", 0)),
                span_windows=int(usage.get("span_windows", 0)),
            ),
            warnings=tuple(str(w) for w in data.get("warnings") or ()),
        )

    @classmethod
    def _batch_response(
        cls, data: Mapping[str, Any], sent: list[tuple[str, list[str]]]
    ) -> list[RerankResponse]:
        return [
            cls._rerank_response(item, documents)
            for item, (_, documents) in zip(data["results"], sent, strict=True)
        ]

    @staticmethod
    def _models(data: Mapping[str, Any]) -> list[ModelInfo]:
        return [
            ModelInfo(
                id=card["id"],
                revision=card.get("revision"),
                max_length=card.get("max_length"),
                owned_by=card.get("owned_by"),
                created=card.get("created"),
            )
            for card in data.get("data", [])
        ]

    @staticmethod
    def _health(response: httpx.Response) -> Health:
        if response.status_code not in (200, 503):
            raise error_from_response(response)
        data = response.json()
        return Health(status=str(data.get("status")), model_loaded=bool(data.get("model_loaded")))


# The clients --------------------------------------------------------------------------------


class Client(_Base):
    """A blocking client for one rerankd server. Use it as a context manager, or `close()` it."""

    _http: httpx.Client

    def _open(self, **options: Any) -> httpx.Client:
        return httpx.Client(**options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call) -> httpx.Response:
        attempt = 0
        while True:
            response = self._http.request(call.method, call.path, json=call.body)
            delay = self._retry_delay(response, attempt)
            if delay is None:
                return response
            response.close()
            time.sleep(delay)
            attempt += 1

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        model: str | None = None,
        top_n: int | None = None,
        raw_scores: bool = False,
        *,
        min_relevance: float | None = None,
        spans: bool = False,
        **options: Any,
    ) -> RerankResponse:
        """Rank `documents` for `query`, best first. `min_relevance` drops documents scored
        below it (before `top_n`); `spans=True` gives each result its best spans (`.spans`).
        `options` are further native request fields (`max_tokens_per_doc`,
        `long_document_strategy`, `max_chunks_per_doc`, `max_spans`, ...)."""
        options = {**options, "min_relevance": min_relevance, "return_spans": spans or None}
        call = self._rerank_call(query, documents, model, top_n, raw_scores, options)
        return self._rerank_response(self._checked(self._send(call)), documents)

    def batch_rerank(
        self,
        queries: Sequence[BatchItem],
        model: str | None = None,
        raw_scores: bool = False,
        *,
        min_relevance: float | None = None,
        spans: bool = False,
    ) -> list[RerankResponse]:
        """Several queries in one call; each item is `(query, documents)` or a mapping with
        `query`, `documents` and optionally `top_n` and `min_relevance` (over the call's).
        Answers come in the same order."""
        call, sent = self._batch_call(queries, model, raw_scores, min_relevance, spans)
        return self._batch_response(self._checked(self._send(call)), sent)

    def models(self) -> list[ModelInfo]:
        return self._models(self._checked(self._send(_Call("GET", "/v1/models"))))

    def health(self) -> Health:
        """The server's state; a 503 (loading, draining) is an answer here, not an error."""
        return self._health(self._http.get("/health"))

    def wait_until_ready(self, timeout: float = 120.0, interval: float = 0.5) -> Health:
        """Poll `/health` until it says ok; raise `NotReady` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                health = self.health()
                if health.ok:
                    return health
            except httpx.TransportError:
                health = Health("unreachable", False)
            if time.monotonic() >= deadline:
                raise NotReady(f"{self.base_url} not ready after {timeout:g}s: {health.status}")
            time.sleep(interval)


class AsyncClient(_Base):
    """The asyncio twin of `Client`: the same methods, awaited."""

    _http: httpx.AsyncClient

    def _open(self, **options: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(**options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call) -> httpx.Response:
        attempt = 0
        while True:
            response = await self._http.request(call.method, call.path, json=call.body)
            delay = self._retry_delay(response, attempt)
            if delay is None:
                return response
            await response.aclose()
            await asyncio.sleep(delay)
            attempt += 1

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        model: str | None = None,
        top_n: int | None = None,
        raw_scores: bool = False,
        *,
        min_relevance: float | None = None,
        spans: bool = False,
        **options: Any,
    ) -> RerankResponse:
        options = {**options, "min_relevance": min_relevance, "return_spans": spans or None}
        call = self._rerank_call(query, documents, model, top_n, raw_scores, options)
        return self._rerank_response(self._checked(await self._send(call)), documents)

    async def batch_rerank(
        self,
        queries: Sequence[BatchItem],
        model: str | None = None,
        raw_scores: bool = False,
        *,
        min_relevance: float | None = None,
        spans: bool = False,
    ) -> list[RerankResponse]:
        call, sent = self._batch_call(queries, model, raw_scores, min_relevance, spans)
        return self._batch_response(self._checked(await self._send(call)), sent)

    async def models(self) -> list[ModelInfo]:
        return self._models(self._checked(await self._send(_Call("GET", "/v1/models"))))

    async def health(self) -> Health:
        return self._health(await self._http.get("/health"))

    async def wait_until_ready(self, timeout: float = 120.0, interval: float = 0.5) -> Health:
        deadline = time.monotonic() + timeout
        while True:
            try:
                health = await self.health()
                if health.ok:
                    return health
            except httpx.TransportError:
                health = Health("unreachable", False)
            if time.monotonic() >= deadline:
                raise NotReady(f"{self.base_url} not ready after {timeout:g}s: {health.status}")
            await asyncio.sleep(interval)


def _ranked(result: Mapping[str, Any], documents: Sequence[str]) -> RankedDocument:
    """One result: `.raw` when a calibration made `.score` a probability, `.spans` when asked."""
    raw = result.get("raw_score")
    spans = result.get("spans")
    return RankedDocument(
        int(result["index"]),
        float(result["score"]),
        documents[int(result["index"])],
        None if raw is None else float(raw),
        None
        if spans is None
        else [Span(int(s["start"]), int(s["end"]), float(s["score"])) for s in spans],
    )
