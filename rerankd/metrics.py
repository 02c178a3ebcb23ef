"""Prometheus metrics: one registry per app, so several apps (tests) never share counters.

Under gunicorn (or uvicorn's `--workers`) the workers write their values to files in a
directory they share (prometheus-client's multiprocess mode, set up by `rerankd.multiproc`)
and `/metrics` on any worker reads them all: counters and histograms add up over every
worker that ever ran under this master, gauges combine as their `multiprocess_mode` says
(queues and in-flight requests add up over live workers, readiness is the least ready one).
Gauges computed from a function are set from it at most once a second on each worker (at a
request or a scrape), since a function cannot be read from another process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    values,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKEN_BUCKETS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


def multiprocess_dir() -> str | None:
    """The shared directory when this process writes its metrics to files, else None."""
    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.shared_dir = multiprocess_dir()
        self._functions: list[tuple[Gauge, Callable[[], float]]] = []
        self._refreshed = 0.0
        r = self.registry
        # process_* (resident memory, open file descriptors, CPU seconds) and python_info:
        # per process, so only where one process serves.
        if self.shared_dir is None:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self.ready = Gauge(
            "rerankd_ready",
            "1 when every model is loaded and the server is not draining (workers: the least).",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.draining = Gauge(
            "rerankd_draining",
            "1 after SIGTERM, while draining.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.requests = Counter(
            "rerankd_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "rerankd_request_duration_seconds",
            "Request latency.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "rerankd_requests_in_flight",
            "Requests being served.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pairs = Counter(
            "rerankd_pairs_scored",
            "(query, document) pairs scored by the model.",
            ["model"],
            registry=r,
        )
        self.tokens = Counter(
            "rerankd_tokens_scored", "Tokens run through the model.", ["model"], registry=r
        )
        self.shared_prefix = Counter(
            "rerankd_shared_prefix_tokens",
            "Prefix tokens (template, instruction, query) a yes/no LLM did not run again for "
            "each document: the request's prefix ran once.",
            ["model"],
            registry=r,
        )
        self.load_seconds = Gauge(
            "rerankd_model_load_seconds",
            "Time to load and warm up a model (workers: the longest).",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.queue_pairs = Gauge(
            "rerankd_queue_pairs",
            "Sequences waiting for a batch.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_tokens = Gauge(
            "rerankd_queue_tokens",
            "Tokens waiting for a batch (the autoscaling signal).",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.batch_size = Histogram(
            "rerankd_batch_size",
            "Sequences per batch.",
            ["model"],
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "rerankd_batch_requests",
            "Distinct requests mixed in one batch.",
            ["model"],
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_padded = Histogram(
            "rerankd_batch_padded_tokens",
            "Padded tokens (longest x count) per batch.",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        # Padding waste = rate(rerankd_batch_padded_tokens_sum) / rate(rerankd_batch_real_tokens_total)
        self.real_total = Counter(
            "rerankd_batch_real_tokens",
            "Real (unpadded) tokens run, in all batches.",
            ["model"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "rerankd_queue_wait_seconds",
            "Time a request waited in the queue before its first batch started.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "rerankd_batch_inference_seconds",
            "Model time per batch.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_entries = Gauge(
            "rerankd_cache_entries",
            "Scores held by the in-memory cache.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cache_hits = Counter(
            "rerankd_cache_hits",
            "Cache hits: scores (cross-encoders) or embeddings (bi-encoders), by kind.",
            ["backend", "kind"],
            registry=r,
        )
        self.cache_misses = Counter(
            "rerankd_cache_misses",
            "Cache misses, by backend and kind (score or embedding).",
            ["backend", "kind"],
            registry=r,
        )
        self.embedded = Counter(
            "rerankd_embedded",
            "Inputs a bi-encoder embedded, by kind (text or image).",
            ["model", "kind"],
            registry=r,
        )
        self.late_encoded = Counter(
            "rerankd_late_interaction_encoded",
            "Inputs a late-interaction model encoded to token vectors, by role (query or "
            "document); a document whose vectors are cached costs none.",
            ["model", "role"],
            registry=r,
        )
        self.cache_errors = Counter(
            "rerankd_cache_errors",
            "Cache operations that failed (the request went on).",
            ["backend"],
            registry=r,
        )
        self.cache_invalid = Counter(
            "rerankd_cache_invalid",
            "Values read from the shared cache that failed validation (served as misses).",
            ["kind"],
            registry=r,
        )
        self.cache_forged = Counter(
            "rerankd_cache_forged",
            "Values read from the shared cache whose signature did not match the server's "
            "secret (forged, moved or written with another secret): recomputed, never served.",
            ["kind"],
            registry=r,
        )
        self.rate_limit_errors = Counter(
            "rerankd_rate_limit_errors",
            "Rate-limit storage failures, by reason (unavailable, bad_key), and what was done.",
            ["reason", "action"],
            registry=r,
        )
        self.model_loads = Counter(
            "rerankd_model_loads", "Model loads started, by registration.", ["model"], registry=r
        )
        self.model_load_failures = Counter(
            "rerankd_model_load_failures", "Model loads that failed.", ["model"], registry=r
        )
        self.model_state = Gauge(
            "rerankd_model_state",
            "1 for the state each launched model is in (loading, ready, draining, failed); "
            "under gunicorn, the number of workers in that state.",
            ["model", "state"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rejected = Counter(
            "rerankd_rejected_requests", "Requests refused before scoring.", ["reason"], registry=r
        )
        self.registry_store_up = Gauge(
            "rerankd_registry_store_up",
            "1 while the shared desired state (Redis, or the SQLite file) answers this "
            "process's poll, 0 while it does not (workers: the least).",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.connections_closed = Counter(
            "rerankd_connections_closed",
            "Connections the server closed on a slow or silent client.",
            ["reason"],
            registry=r,
        )

    def track_state(self, ready: Callable[[], bool], draining: Callable[[], bool]) -> None:
        """Read the ready and draining gauges from their sources at each scrape."""
        self.gauge_function(self.ready, lambda: float(ready() and not draining()))
        self.gauge_function(self.draining, lambda: float(draining()))

    def gauge_function(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """`gauge` reads `read()`: at each scrape in one process; in multiprocess mode, set
        from it by `refresh` (a function cannot be read from another process)."""
        if self.shared_dir is None:
            gauge.set_function(read)
        else:
            self._functions.append((gauge, read))
            gauge.set(read())

    def refresh(self, every: float = 1.0) -> None:
        """Multiprocess mode: set the function-backed gauges (at most once per `every` s)."""
        now = time.monotonic()
        if not self._functions or now - self._refreshed < every:
            return
        self._refreshed = now
        for gauge, read in self._functions:
            gauge.set(read())

    def remove_model(self, model: str) -> None:
        """Forget a terminated model's label sets, so its series end instead of going stale."""
        for metric in (
            self.pairs,
            self.tokens,
            self.shared_prefix,
            self.load_seconds,
            self.queue_pairs,
            self.queue_tokens,
            self.batch_size,
            self.batch_requests,
            self.batch_padded,
            self.real_total,
            self.inference,
        ):
            metric.remove(model)
        for state in ("loading", "ready", "draining", "failed"):
            self.model_state.remove(model, state)

    def remove_registration(self, name: str) -> None:
        self.model_loads.remove(name)
        self.model_load_failures.remove(name)

    def render(self) -> bytes:
        if self.shared_dir is None:
            return generate_latest(self.registry)
        from rerankd.multiproc import collect

        self.refresh(every=0.0)
        return collect(self.shared_dir)

    def batch_observer(self, model: str) -> BatchMetrics:
        return BatchMetrics(self, model)


class BatchMetrics:
    """The `BatchObserver` of one model's batcher."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._m = metrics
        self._model = model
        self._queue_pairs = metrics.queue_pairs.labels(model)
        self._queue_tokens = metrics.queue_tokens.labels(model)

    def queue_changed(self, pairs: int, tokens: int) -> None:
        self._queue_pairs.set(pairs)
        self._queue_tokens.set(tokens)

    def batch_done(
        self, pairs: int, requests: int, padded_tokens: int, real_tokens: int, seconds: float
    ) -> None:
        m, model = self._m, self._model
        m.batch_size.labels(model).observe(pairs)
        m.batch_requests.labels(model).observe(requests)
        m.batch_padded.labels(model).observe(padded_tokens)
        m.real_total.labels(model).inc(real_tokens)
        m.inference.labels(model).observe(seconds)
        m.pairs.labels(model).inc(pairs)
        m.tokens.labels(model).inc(real_tokens)

    def rejected(self, reason: str) -> None:
        self._m.rejected.labels(reason).inc()

    def queue_wait(self, seconds: float) -> None:
        self._m.queue_wait.labels(self._model).observe(seconds)
