"""Score caches: an in-memory LRU, and Redis shared by every replica.

A cached value is a document's raw score (logit, or cosine for a bi-encoder) so one entry
serves both normalized and raw requests. Keys hash a structured tuple, never a concatenation,
so that no two different (query, document) pairs can share a key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from rerankd.metrics import Metrics

logger = logging.getLogger(__name__)


def score_key(
    model_identity: tuple[object, ...], policy: tuple[object, ...], query: str, document: str
) -> str:
    """model_identity = (name, revision, max_length); policy = the long-document settings."""
    payload = json.dumps([list(model_identity), list(policy), query, document], ensure_ascii=False)
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=16).hexdigest()


class ScoreCache(Protocol):
    async def get_many(self, keys: Sequence[str]) -> list[float | None]: ...

    async def set_many(self, items: dict[str, float]) -> None: ...

    async def close(self) -> None: ...


class MemoryCache:
    """A least-recently-used map bounded in entries; used from the event loop only."""

    def __init__(self, max_entries: int, metrics: Metrics | None = None) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, float] = OrderedDict()
        self._metrics = metrics

    def __len__(self) -> int:
        return len(self._data)

    async def get_many(self, keys: Sequence[str]) -> list[float | None]:
        found: list[float | None] = []
        for key in keys:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            found.append(value)
        _count(self._metrics, "memory", found)
        return found

    async def set_many(self, items: dict[str, float]) -> None:
        for key, value in items.items():
            self._data[key] = value
            self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    async def close(self) -> None:
        self._data.clear()


class RedisCache:
    """Redis with a short leash: an outage costs speed, never a request.

    On the first failure the outage is logged once and Redis is skipped for `retry_seconds`;
    then one request tries again, and success brings the cache back by itself.
    """

    def __init__(
        self,
        url: str,
        ttl: int,
        metrics: Metrics | None = None,
        retry_seconds: float = 1.0,
        timeout: float = 0.25,
    ) -> None:
        from redis.asyncio import Redis

        self._redis = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._ttl = ttl
        self._metrics = metrics
        self._retry_seconds = retry_seconds
        self._down_until = 0.0
        self._down = False

    @property
    def available(self) -> bool:
        return not self._down

    async def get_many(self, keys: Sequence[str]) -> list[float | None]:
        if not keys or self._skipping():
            return [None] * len(keys)
        try:
            raw = await self._redis.mget([_redis_key(k) for k in keys])
        except Exception as exc:  # noqa: BLE001 - any Redis failure degrades to a miss
            self._failed(exc)
            return [None] * len(keys)
        self._recovered()
        found = [None if value is None else float(value) for value in raw]
        _count(self._metrics, "redis", found)
        return found

    async def set_many(self, items: dict[str, float]) -> None:
        if not items or self._skipping():
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(_redis_key(key), repr(float(value)), ex=self._ttl)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return
        self._recovered()

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a dead connection may fail; nothing to do
            await self._redis.aclose()

    def _skipping(self) -> bool:
        return self._down and time.monotonic() < self._down_until

    def _failed(self, exc: Exception) -> None:
        if self._metrics:
            self._metrics.cache_errors.labels("redis").inc()
        if not self._down:
            logger.warning("redis cache unavailable, serving without it: %s", exc)
        self._down = True
        self._down_until = time.monotonic() + self._retry_seconds

    def _recovered(self) -> None:
        if self._down:
            logger.warning("redis cache is back")
            self._down = False


class TieredCache:
    """Memory first, then Redis; Redis hits are copied into memory."""

    def __init__(self, memory: MemoryCache | None, shared: RedisCache | None) -> None:
        self._tiers = [tier for tier in (memory, shared) if tier is not None]
        self._memory = memory

    async def get_many(self, keys: Sequence[str]) -> list[float | None]:
        found: list[float | None] = [None] * len(keys)
        missing = list(range(len(keys)))
        for tier in self._tiers:
            if not missing:
                break
            values = await tier.get_many([keys[i] for i in missing])
            promote = {}
            for i, value in zip(missing, values, strict=True):
                if value is not None:
                    found[i] = value
                    if tier is not self._memory and self._memory is not None:
                        promote[keys[i]] = value
            if promote and self._memory is not None:
                await self._memory.set_many(promote)
            missing = [i for i in missing if found[i] is None]
        return found

    async def set_many(self, items: dict[str, float]) -> None:
        for tier in self._tiers:
            await tier.set_many(items)

    async def close(self) -> None:
        for tier in self._tiers:
            await tier.close()


def _redis_key(key: str) -> str:
    return "rerankd:score:" + key


def _count(metrics: Metrics | None, backend: str, found: list[float | None]) -> None:
    if metrics is None or not found:
        return
    hits = sum(value is not None for value in found)
    if hits:
        metrics.cache_hits.labels(backend).inc(hits)
    if len(found) - hits:
        metrics.cache_misses.labels(backend).inc(len(found) - hits)
