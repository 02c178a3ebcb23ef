"""Caches: an in-memory LRU, and Redis shared by every replica, for two kinds of value.

- Scores (cross-encoders): a document's raw score (logit) for one query, so one entry serves
  both normalized and raw requests.
- Embeddings (bi-encoders): a document's embedding rows (one per chunk), for every later
  query; for images this is the difference between re-encoding a catalogue per query and not.

A `Codec` says how a kind of value is stored, weighed (the memory bound) and counted. Keys hash
a structured tuple of content hashes, never a concatenation, so no two inputs share a key.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

from rerankd.metrics import Metrics
from rerankd.throttle import ThrottledLog

V = TypeVar("V")

logger = logging.getLogger(__name__)


def _key(*parts: object) -> str:
    payload = json.dumps(
        [list(p) if isinstance(p, tuple) else p for p in parts], ensure_ascii=False
    )
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=16).hexdigest()


def score_key(
    model_identity: tuple[object, ...], policy: tuple[object, ...], query: str, document: str
) -> str:
    """model_identity = `rerankd.engine.identity.cache_identity`; policy = the long-document
    settings; query and document are content hashes."""
    return _key(model_identity, policy, query, document)


def embedding_key(
    model_identity: tuple[object, ...], policy: tuple[object, ...], role: str, document: str
) -> str:
    """The embedding of one document (its content hash) as a query or as a document."""
    return _key("embedding", model_identity, policy, role, document)


class InvalidCached(ValueError):
    """A value read from the shared cache that this version did not write: a miss, never served."""


@dataclass(frozen=True)
class Codec(Generic[V]):
    """How one kind of cached value is stored in Redis, weighed in memory, and counted.

    Every stored value starts with a format tag (kind and version); `loads` checks the tag,
    the size and that every number is finite, and raises `InvalidCached` otherwise.
    """

    name: str  # "score" or "embedding": the Redis key prefix and the metrics' kind label
    dumps: Callable[[V], bytes]
    loads: Callable[[bytes], V]
    weight: Callable[[V], int]


_SCORE_TAG = b"s1"
_SCORE = struct.Struct("<d")
_ROWS_TAG = b"e1"
_ROWS = struct.Struct("<II")
MAX_ROWS = 16_384  # one row per chunk (bi-encoders) or per token (late interaction)
MAX_DIM = 16_384
MAX_ROWS_BYTES = 64 << 20


def _dump_score(value: float) -> bytes:
    return _SCORE_TAG + _SCORE.pack(float(value))


def _load_score(data: bytes) -> float:
    if len(data) != len(_SCORE_TAG) + _SCORE.size or not data.startswith(_SCORE_TAG):
        raise InvalidCached(f"not a score of format {_SCORE_TAG.decode()} ({len(data)} bytes)")
    (value,) = _SCORE.unpack_from(data, len(_SCORE_TAG))
    if not math.isfinite(value):
        raise InvalidCached(f"a score that is not finite ({value})")
    return float(value)


def _dump_rows(rows: np.ndarray) -> bytes:
    count, dim = rows.shape
    return _ROWS_TAG + _ROWS.pack(count, dim) + np.ascontiguousarray(rows, dtype="<f4").tobytes()


def _load_rows(data: bytes) -> np.ndarray:
    head = len(_ROWS_TAG) + _ROWS.size
    if len(data) < head or not data.startswith(_ROWS_TAG):
        raise InvalidCached(f"not embedding rows of format {_ROWS_TAG.decode()}")
    count, dim = _ROWS.unpack_from(data, len(_ROWS_TAG))
    if not (1 <= count <= MAX_ROWS and 1 <= dim <= MAX_DIM):
        raise InvalidCached(f"embedding rows of an impossible shape ({count} x {dim})")
    size = count * dim * 4
    if size > MAX_ROWS_BYTES or len(data) != head + size:
        raise InvalidCached(f"{len(data) - head} bytes for {count} x {dim} float32 rows")
    rows = np.frombuffer(data, dtype="<f4", offset=head).reshape(count, dim).astype(np.float32)
    if not np.isfinite(rows).all():
        raise InvalidCached("embedding rows that are not finite")
    return rows


_SEAL_TAG = b"h1"
_MAC_SIZE = 16  # HMAC-SHA256 cut to 128 bits


def cache_secret(server_secret: str | None, keys: Sequence[str], shared: bool) -> bytes:
    """The HMAC key that signs values in Redis: from `--server-secret`, or else derived from
    all the configured API and admin keys (every process with the same keys agrees), kept
    apart from the key-naming secret by its own label. Without either it is public, and
    anyone who can write to a shared Redis could forge a value: logged when `shared`."""
    if server_secret:
        material = server_secret.encode()
    else:
        material = b"\0".join(sorted(key.encode() for key in keys if key))
        if not material and shared:
            logger.warning(
                "the redis cache is signed without a secret: set --server-secret (the same on "
                "every process) so that nobody who can write to Redis can forge scores"
            )
    return hmac.new(material, b"rerankd-cache-values", hashlib.sha256).digest()


def seal(secret: bytes, key: str, payload: bytes) -> bytes:
    """The value stored under `key`: a tag, then an HMAC of the key and the payload, then the
    payload. Signing the key too means a genuine value copied to another key is refused."""
    mac = hmac.new(secret, key.encode() + b"\0" + payload, hashlib.sha256).digest()
    return _SEAL_TAG + mac[:_MAC_SIZE] + payload


class ForgedCached(InvalidCached):
    """A value whose signature does not match: written without this deployment's secret."""


def unseal(secret: bytes, key: str, data: bytes) -> bytes:
    """The payload of a sealed value; `ForgedCached` when its signature does not match."""
    head = len(_SEAL_TAG) + _MAC_SIZE
    if len(data) < head or not data.startswith(_SEAL_TAG):
        raise ForgedCached(f"a value without the {_SEAL_TAG.decode()} signature")
    payload = data[head:]
    if not hmac.compare_digest(seal(secret, key, payload)[:head], data[:head]):
        raise ForgedCached("a value whose signature does not match this server's secret")
    return payload


SCORES: Codec[float] = Codec("score", _dump_score, _load_score, lambda v: 1)
EMBEDDINGS: Codec[np.ndarray] = Codec("embedding", _dump_rows, _load_rows, lambda v: v.nbytes)

# The tenant a request's cache entries belong to, under `--cache-scope key` (set by the
# request guard for each request); "" is the one namespace every request shares.
cache_namespace: ContextVar[str] = ContextVar("rerankd_cache_namespace", default="")


def scoped(key: str) -> str:
    """The key in the current request's namespace (unchanged when the cache is shared)."""
    namespace = cache_namespace.get()
    return _key("tenant", namespace, key) if namespace else key


class Cache(Protocol[V]):
    async def get_many(self, keys: Sequence[str]) -> list[V | None]: ...

    async def set_many(self, items: dict[str, V]) -> None: ...

    async def close(self) -> None: ...


ScoreCache = Cache[float]
EmbeddingCache = Cache[np.ndarray]


class MemoryCache(Generic[V]):
    """A least-recently-used map bounded in weight (entries for scores, bytes for
    embeddings); used from the event loop only."""

    def __init__(
        self,
        max_weight: int,
        codec: Codec[V],
        metrics: Metrics | None = None,
    ) -> None:
        self.max_weight = max_weight
        self._data: OrderedDict[str, V] = OrderedDict()
        self._weight = 0
        self._metrics = metrics
        self._codec = codec

    def __len__(self) -> int:
        return len(self._data)

    async def get_many(self, keys: Sequence[str]) -> list[V | None]:
        found: list[V | None] = []
        for key in keys:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            found.append(value)
        _count(self._metrics, self._codec.name, "memory", found)
        return found

    async def set_many(self, items: dict[str, V]) -> None:
        weigh = self._codec.weight
        for key, value in items.items():
            old = self._data.pop(key, None)
            if old is not None:
                self._weight -= weigh(old)
            self._data[key] = value
            self._weight += weigh(value)
        while self._weight > self.max_weight and self._data:
            _, evicted = self._data.popitem(last=False)
            self._weight -= weigh(evicted)

    async def close(self) -> None:
        self._data.clear()
        self._weight = 0


class RedisCache(Generic[V]):
    """Redis with a short leash: an outage costs speed, never a request.

    Values are sealed (`seal`) with the deployment's secret, so whoever can write to Redis
    but lacks the secret cannot put a score or a vector in front of a client: a value whose
    signature fails is a miss, counted (`rerankd_cache_forged_total`), recomputed and
    rewritten. On a failure Redis is skipped for `retry_seconds` (a circuit breaker); then one request
    tries again, and success brings the cache back by itself. Each failure is counted; the
    log says so at most every 30 s while the outage lasts. A value read back that this
    version did not write (garbage, NaN, a wrong size) is a miss, counted and logged, never
    served.
    """

    def __init__(
        self,
        url: str,
        ttl: int,
        codec: Codec[V],
        metrics: Metrics | None = None,
        retry_seconds: float = 1.0,
        timeout: float = 0.25,
        *,
        secret: bytes,
    ) -> None:
        from redis.asyncio import Redis

        self._redis = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._ttl = ttl
        self._metrics = metrics
        self._retry_seconds = retry_seconds
        self._down_until = 0.0
        self._down = False
        self._codec = codec
        self._secret = secret
        self._prefix = f"rerankd:{codec.name}:"
        self._invalid_log = ThrottledLog(logger)
        self._forged_log = ThrottledLog(logger)
        self._outage_log = ThrottledLog(logger)

    @property
    def available(self) -> bool:
        return not self._down

    async def get_many(self, keys: Sequence[str]) -> list[V | None]:
        if not keys or self._skipping():
            return [None] * len(keys)
        try:
            raw = await self._redis.mget([self._prefix + k for k in keys])
        except Exception as exc:  # noqa: BLE001 - any Redis failure degrades to a miss
            self._failed(exc)
            return [None] * len(keys)
        self._recovered()
        found = [
            None if value is None else self._decode(self._prefix + key, value)
            for key, value in zip(keys, raw, strict=True)
        ]
        _count(self._metrics, self._codec.name, "redis", found)
        return found

    def _decode(self, key: str, value: object) -> V | None:
        """The value, or None (a miss, counted and logged) for anything this deployment did
        not write: a bad signature, another format, a wrong size, NaN, a type Redis should
        not have handed back."""
        try:
            if not isinstance(value, (bytes, str)):
                raise InvalidCached(f"a {type(value).__name__} instead of bytes")
            return self._codec.loads(unseal(self._secret, key, _bytes(value)))
        except ForgedCached as exc:
            if self._metrics:
                self._metrics.cache_forged.labels(self._codec.name).inc()
            self._forged_log.warn(
                "unsigned %s in the redis cache, recomputed: %s", self._codec.name, exc
            )
            return None
        except (InvalidCached, ValueError, struct.error) as exc:
            if self._metrics:
                self._metrics.cache_invalid.labels(self._codec.name).inc()
            self._invalid_log.warn(
                "invalid %s in the redis cache, treated as a miss: %s", self._codec.name, exc
            )
            return None

    async def set_many(self, items: dict[str, V]) -> None:
        if not items or self._skipping():
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    name = self._prefix + key
                    sealed = seal(self._secret, name, self._codec.dumps(value))
                    pipe.set(name, sealed, ex=self._ttl)
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
        self._outage_log.warn("redis cache unavailable, serving without it: %s", exc)
        self._down = True
        self._down_until = time.monotonic() + self._retry_seconds

    def _recovered(self) -> None:
        if self._down:
            logger.warning("redis cache is back")
            self._down = False


class TieredCache(Generic[V]):
    """Memory first, then Redis; Redis hits are copied into memory. Keys are put in the
    request's cache namespace (`cache_namespace`) here, once for both tiers."""

    def __init__(self, memory: MemoryCache[V] | None, shared: RedisCache[V] | None) -> None:
        self._tiers: list[MemoryCache[V] | RedisCache[V]] = [
            tier for tier in (memory, shared) if tier is not None
        ]
        self._memory = memory

    @property
    def memory(self) -> MemoryCache[V] | None:
        return self._memory

    async def get_many(self, keys: Sequence[str]) -> list[V | None]:
        keys = [scoped(key) for key in keys]
        found: list[V | None] = [None] * len(keys)
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

    async def set_many(self, items: dict[str, V]) -> None:
        items = {scoped(key): value for key, value in items.items()}
        for tier in self._tiers:
            await tier.set_many(items)

    async def close(self) -> None:
        for tier in self._tiers:
            await tier.close()


def _count(metrics: Metrics | None, kind: str, backend: str, found: Sequence[object]) -> None:
    if metrics is None or not found:
        return
    hits = sum(value is not None for value in found)
    if hits:
        metrics.cache_hits.labels(backend, kind).inc(hits)
    if len(found) - hits:
        metrics.cache_misses.labels(backend, kind).inc(len(found) - hits)


def tiered(
    codec: Codec[V],
    memory_weight: int,
    redis_url: str | None,
    redis_ttl: int,
    metrics: Metrics | None = None,
    *,
    secret: bytes,
) -> TieredCache[V] | None:
    """Memory (when `memory_weight` > 0) in front of Redis (when a URL is given, its values
    signed with `secret`), or None."""
    memory = MemoryCache[V](memory_weight, codec, metrics) if memory_weight else None
    shared = (
        RedisCache[V](redis_url, redis_ttl, codec, metrics, secret=secret) if redis_url else None
    )
    if memory is None and shared is None:
        return None
    return TieredCache(memory, shared)


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
