"""Limits and cache that hold across processes, against a real redis-server: values read back
are validated, tenants can be kept apart, a stalled Redis costs a bounded delay, rate-limit
keys of a foreign type are no way around the limit, and failed authentications count."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from rerankd.cache import cache_secret, seal, unseal
from tests.server import ServerProcess, metric, run_server
from tests.test_redis import RedisServer

DOCS = ["alpha beta gamma", "delta epsilon", "zeta eta theta iota", "kappa lambda mu"]
SECRET = "fleet-test-secret"
SIGNING_KEY = cache_secret(SECRET, [], shared=False)


def signed(key: bytes, payload: bytes, secret: bytes = SIGNING_KEY) -> bytes:
    """A value as a server holding `secret` writes it under `key`: what gets past the
    signature, so that the format checks behind it are what a test exercises."""
    return seal(secret, key.decode(), payload)


@pytest.fixture(scope="module")
def cached_server(
    bert_model: Path, module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Only Redis caches (no memory tier), so every read goes through validation. Its rate
    limit, far above what any test sends, is for the stalled-Redis test (fail open)."""
    args = ["--model", str(bert_model), "--redis-url", module_redis.url, "--cache-entries", "0",
            "--server-secret", SECRET, "--rate-limit", "1000/second"]  # fmt: skip
    with run_server(args, log_dir=tmp_path_factory.mktemp("cached")) as server:
        yield server


def rerank(server: ServerProcess, query: str, headers: dict[str, str] | None = None) -> dict:
    response = httpx.post(
        server.url + "/rerank",
        json={"query": query, "documents": DOCS, "raw_scores": True},
        headers=headers or {},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()


def scores(body: dict) -> dict[int, float]:
    return {r["index"]: r["score"] for r in body["results"]}


def test_bad_values_in_the_redis_cache_are_misses_never_served(
    cached_server: ServerProcess, module_redis: RedisServer
) -> None:
    client = redis.Redis(port=module_redis.port)
    first = rerank(cached_server, "integrity query")
    keys = sorted(client.keys("rerankd:score:*"))
    assert len(keys) == len(DOCS) and first["usage"]["cached"] == 0
    assert rerank(cached_server, "integrity query")["usage"]["cached"] == len(DOCS)
    forged = [
        b"garbage",
        b"s1" + struct.pack("<d", float("nan")),
        b"0.5",  # a finite value without the format tag (what older versions wrote)
        b"s1" + struct.pack("<d", 0.5) + b"x",  # the wrong size
    ]
    for key, value in zip(keys, forged, strict=True):
        client.set(key, signed(key, value))
    again = rerank(cached_server, "integrity query")
    assert again["usage"]["cached"] == 0, "no forged value is served"
    assert scores(again) == pytest.approx(scores(first), abs=1e-5)
    text = httpx.get(cached_server.url + "/metrics").text
    assert metric(text, "rerankd_cache_invalid_total", 'kind="score"') == len(forged)
    warnings = [line for line in cached_server.logs().splitlines() if "invalid score" in line]
    assert len(warnings) == 1, "a burst of bad values is one log line, not one per value"
    # The forged entries were overwritten by good ones: served again.
    assert rerank(cached_server, "integrity query")["usage"]["cached"] == len(DOCS)


def test_a_finite_score_forged_in_redis_without_the_secret_is_refused_and_recomputed(
    cached_server: ServerProcess, module_redis: RedisServer
) -> None:
    """Someone with Redis access but not the server secret writes well-formed finite scores:
    unsigned, with a made-up signature, signed with another secret, and a genuine value of
    another pair copied over. None is served; each is counted, recomputed and rewritten."""
    client = redis.Redis(port=module_redis.port)
    client.flushdb()
    first = rerank(cached_server, "forgery query")
    keys = sorted(client.keys("rerankd:score:*"))
    assert len(keys) == len(DOCS)
    genuine = [client.get(key) for key in keys]
    assert all(value is not None for value in genuine)
    score = b"s1" + struct.pack("<d", 42.0)  # a finite score no document here earns
    forged = [
        score,  # what an older version (or a forger) writes: no signature
        b"h1" + bytes(16) + score,  # a made-up signature
        signed(keys[2], score, cache_secret("another secret", [], shared=False)),
        genuine[0],  # a real value, moved to another pair's key
    ]
    for key, value in zip(keys, forged, strict=True):
        client.set(key, value)
    before = httpx.get(cached_server.url + "/metrics").text
    again = rerank(cached_server, "forgery query")
    assert again["usage"]["cached"] == 0, "no forged value is served"
    assert scores(again) == pytest.approx(scores(first), abs=1e-5)
    assert all(score != 42.0 for score in scores(again).values())
    text = httpx.get(cached_server.url + "/metrics").text
    assert metric(text, "rerankd_cache_forged_total", 'kind="score"') - metric(
        before, "rerankd_cache_forged_total", 'kind="score"'
    ) == len(forged)
    assert metric(text, "rerankd_cache_invalid_total", 'kind="score"') == metric(
        before, "rerankd_cache_invalid_total", 'kind="score"'
    ), "a bad signature is told apart from a bad format"
    assert "unsigned score in the redis cache" in cached_server.logs()
    for key in keys:  # rewritten, signed with the server's secret
        value = client.get(key)
        assert value is not None and unseal(SIGNING_KEY, key.decode(), value)
    assert rerank(cached_server, "forgery query")["usage"]["cached"] == len(DOCS)


def test_a_cache_key_of_another_redis_type_is_a_miss(
    cached_server: ServerProcess, module_redis: RedisServer
) -> None:
    client = redis.Redis(port=module_redis.port)
    rerank(cached_server, "type query")
    before = set(client.keys("rerankd:score:*"))
    rerank(cached_server, "type query")
    key = sorted(before)[0]
    for name in sorted(before):
        client.delete(name)
    client.rpush(key, "a", "b")
    body = rerank(cached_server, "type query")
    assert body["usage"]["cached"] == 0


@pytest.fixture(scope="module")
def embedding_server(
    module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    args = ["--model", "builtin", "--redis-url", module_redis.url, "--embedding-cache-mb", "0",
            "--server-secret", SECRET]  # fmt: skip
    with run_server(args, log_dir=tmp_path_factory.mktemp("embedding")) as server:
        yield server


def test_bad_embeddings_in_the_redis_cache_are_misses(
    embedding_server: ServerProcess, module_redis: RedisServer
) -> None:
    client = redis.Redis(port=module_redis.port)
    first = rerank(embedding_server, "embedding integrity")
    keys = sorted(client.keys("rerankd:embedding:*"))
    assert len(keys) == len(DOCS) + 1
    forged = [
        b"e1" + struct.pack("<II", 10**6, 384),  # a huge row count, no rows
        b"e1" + struct.pack("<II", 1, 4) + struct.pack("<4f", 1, 2, float("inf"), 4),
        b"\x01\x00\x00\x00" + b"\x00" * 1536,  # the unversioned format
        b"e1" + struct.pack("<II", 1, 384) + b"\x00" * 10,  # short
        b"not an embedding",
    ]
    for key, value in zip(keys, forged, strict=True):
        client.set(key, signed(key, value))
    again = rerank(embedding_server, "embedding integrity")
    assert again["usage"]["cached"] == 0
    assert scores(again) == pytest.approx(scores(first), abs=1e-5)
    text = httpx.get(embedding_server.url + "/metrics").text
    assert metric(text, "rerankd_cache_invalid_total", 'kind="embedding"') == len(forged)


TENANT_A, TENANT_B = {"X-API-Key": "tenant-a"}, {"X-API-Key": "tenant-b"}


@pytest.fixture(scope="module")
def keyed_server(
    bert_model: Path, module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Two tenants, the default (shared) cache scope, and a rate limit that fails closed
    when Redis is out (for the stalled-Redis test; far above what any test sends)."""
    args = ["--model", str(bert_model), "--redis-url", module_redis.url,
            "--api-keys", "tenant-a,tenant-b",
            "--rate-limit", "1000/second", "--rate-limit-on-failure", "closed"]  # fmt: skip
    with run_server(args, log_dir=tmp_path_factory.mktemp("keyed")) as server:
        yield server


@pytest.fixture(scope="module")
def limited_server(
    bert_model: Path, module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Tenants kept apart in the cache (`--cache-scope key`) and a tight rate limit. Limits
    count per principal: each test here uses keys of its own (tenant-*, good-key)."""
    args = ["--model", str(bert_model), "--redis-url", module_redis.url,
            "--api-keys", "tenant-a,tenant-b,good-key", "--cache-scope", "key",
            "--rate-limit", "3/minute"]  # fmt: skip
    with run_server(args, log_dir=tmp_path_factory.mktemp("limited")) as server:
        yield server


def test_cache_scope_key_keeps_tenants_apart(
    limited_server: ServerProcess, keyed_server: ServerProcess
) -> None:
    a, b = TENANT_A, TENANT_B
    scoped = limited_server
    rerank(scoped, "tenant query", a)
    assert rerank(scoped, "tenant query", a)["usage"]["cached"] == len(DOCS)
    other = rerank(scoped, "tenant query", b)
    assert other["usage"]["cached"] == 0 and other["usage"]["tokens"] > 0, (
        "tenant b cannot tell that tenant a sent this query"
    )
    shared = keyed_server  # the default scope: shared
    rerank(shared, "shared tenant query", a)
    assert rerank(shared, "shared tenant query", b)["usage"]["cached"] == len(DOCS)


def test_a_stalled_redis_costs_a_bounded_delay_and_shows_in_metrics(
    cached_server: ServerProcess, keyed_server: ServerProcess, module_redis: RedisServer
) -> None:
    """SIGSTOP Redis under load: every request answers within 2 s (the client's deadline),
    served (fail open) or refused with 503 (fail closed); the failures are in /metrics."""
    open_, closed = cached_server, keyed_server  # both rate-limited, only `closed` fails closed
    headers = {open_.url: {}, closed.url: TENANT_A}
    for server in (open_, closed):
        rerank(server, "warm", headers[server.url])
    assert module_redis.process is not None
    pid = module_redis.process.pid

    async def load(server: ServerProcess) -> list[int]:
        statuses: list[int] = []
        async with httpx.AsyncClient(
            base_url=server.url, timeout=2.0, headers=headers[server.url]
        ) as client:

            async def worker(w: int) -> None:
                for i in range(6):
                    response = await client.post(
                        "/rerank", json={"query": f"stall {w} {i}", "documents": DOCS[:2]}
                    )
                    statuses.append(response.status_code)

            await asyncio.gather(*(worker(w) for w in range(3)))
        return statuses

    os.kill(pid, signal.SIGSTOP)
    try:
        served = asyncio.run(load(open_))
        refused = asyncio.run(load(closed))
    finally:
        os.kill(pid, signal.SIGCONT)
    assert set(served) == {200}, served
    assert set(refused) <= {200, 503} and 503 in refused, refused
    text = httpx.get(open_.url + "/metrics").text
    assert metric(text, "rerankd_rate_limit_errors_total", 'action="served"') >= 1
    assert metric(text, "rerankd_cache_errors_total", 'backend="redis"') >= 1
    text = httpx.get(closed.url + "/metrics").text
    assert metric(text, "rerankd_rate_limit_errors_total", 'action="refused"') >= 1
    assert "rate-limit storage failed" in closed.logs()
    time.sleep(1.2)  # past the circuit breaker's pause: Redis is tried again
    assert (
        httpx.post(
            closed.url + "/rerank",
            json={"query": "back", "documents": DOCS},
            headers=TENANT_A,
            timeout=30,
        ).status_code
        == 200
    )


def test_foreign_rate_limit_keys_and_failed_authentications_are_limited(
    limited_server: ServerProcess, module_redis: RedisServer
) -> None:
    client = redis.Redis(port=module_redis.port)
    client.flushdb()  # no window of another test's principal: only good-key's is written
    good = {"X-API-Key": "good-key"}
    body = {"query": "limited", "documents": DOCS[:1]}
    server = limited_server
    assert httpx.post(server.url + "/rerank", json=body, headers=good).status_code == 200
    limit_keys = client.keys("LIMITS*")
    assert limit_keys
    for key in limit_keys:  # a value of the wrong type where the limiter keeps its window
        client.delete(key)
        client.set(key, "not a list")
    statuses = [
        httpx.post(server.url + "/rerank", json=body, headers=good).status_code for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429], "a foreign key does not lift the limit"
    text = httpx.get(server.url + "/metrics").text
    assert metric(text, "rerankd_rate_limit_errors_total", 'reason="bad_key"') >= 1

    wrong = [
        httpx.post(
            server.url + "/rerank", json=body, headers={"X-API-Key": f"guess-{i}"}
        ).status_code
        for i in range(5)
    ]
    assert wrong == [401, 401, 401, 429, 429], "failed authentications count per address"


def test_x_request_id_is_echoed_only_as_a_bounded_token(cached_server: ServerProcess) -> None:
    def sent(value: str) -> str:
        raw = value.encode("latin-1")
        response = httpx.get(cached_server.url + "/health", headers={"X-Request-ID": raw})
        return response.headers["x-request-id"]

    assert sent("trace-01:abc/DEF+=_.") == "trace-01:abc/DEF+=_."
    for bad in ("a" * 60_000, "two words", "tab\there", "x" * 129, "caf\u00e9"):
        replaced = sent(bad)
        assert replaced != bad and len(replaced) == 32 and replaced.isalnum()
    logged = [
        json.loads(line)
        for line in cached_server.logs().splitlines()
        if line.startswith("{") and '"request_id"' in line
    ]
    assert all(len(entry["request_id"]) <= 128 for entry in logged)


def test_well_formed_embeddings_of_another_width_are_misses(
    embedding_server: ServerProcess, module_redis: RedisServer, tmp_path: Path
) -> None:
    """Rows that pass the format checks but are not this model's width (384): a miss, both in
    a process that knows the width and in a fresh one whose first request meets them."""
    client = redis.Redis(port=module_redis.port)
    client.flushdb()
    first = rerank(embedding_server, "width query")
    keys = sorted(client.keys("rerankd:embedding:*"))
    narrow = b"e1" + struct.pack("<II", 1, 4) + struct.pack("<4f", 0.5, 0.5, 0.5, 0.5)
    for key in keys:
        client.set(key, signed(key, narrow))
    again = rerank(embedding_server, "width query")
    assert again["usage"]["cached"] == 0
    assert scores(again) == pytest.approx(scores(first), abs=1e-5)
    for key in client.keys("rerankd:embedding:*"):
        client.set(key, signed(key, narrow))
    args = ["--model", "builtin", "--redis-url", module_redis.url, "--embedding-cache-mb", "0",
            "--server-secret", SECRET]  # fmt: skip
    with run_server(args, log_dir=tmp_path) as fresh:
        body = rerank(fresh, "width query")  # every row it reads is 4 wide
        assert body["usage"]["cached"] == 0
        assert scores(body) == pytest.approx(scores(first), abs=1e-5)
