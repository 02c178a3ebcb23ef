"""The shared Redis score cache with a real redis-server, including an outage under load."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.server import ServerProcess, free_port, metric, run_server
from tests.test_serving import rag_request


class RedisServer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed: run `make system-deps` (Debian package redis-server)"
            )
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def keys(self) -> int:
        return int(redis.Redis(port=self.port).dbsize())


@pytest.fixture()
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def server_pair(
    bert_model: Path, module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two servers on one Redis, shared by the tests below that flush it first: a rate limit
    (which only the rate-limit test reaches) and the default memory cache in front of Redis."""
    args = ["--model", str(bert_model), "--redis-url", module_redis.url, "--rate-limit", "6/minute"]
    tmp = tmp_path_factory.mktemp("pair")
    with run_server(args, log_dir=tmp) as first, run_server(args, log_dir=tmp) as second:
        yield first, second


@pytest.fixture()
def pair(
    server_pair: tuple[ServerProcess, ServerProcess], module_redis: RedisServer
) -> tuple[ServerProcess, ServerProcess]:
    """The shared pair over an empty Redis: no cached score, no rate-limit window."""
    redis.Redis(port=module_redis.port).flushall()
    return server_pair


def test_two_servers_share_cached_scores(
    pair: tuple[ServerProcess, ServerProcess], module_redis: RedisServer
) -> None:
    first, second = pair
    client = redis.Redis(port=module_redis.port)
    body = rag_request(1, count=8)
    scored = httpx.post(first.url + "/rerank", json=body, timeout=60).json()
    # Only the scores: the rate limiter keeps its window in the same Redis.
    assert scored["usage"]["cached"] == 0 and len(client.keys("rerankd:score:*")) == 8
    shared = httpx.post(second.url + "/rerank", json=body, timeout=60).json()
    assert shared["usage"]["cached"] == 8 and shared["usage"]["tokens"] == 0
    assert shared["results"] == scored["results"]
    text = httpx.get(second.url + "/metrics").text
    assert metric(text, "rerankd_cache_hits_total", 'backend="redis"') == 8


def test_redis_outage_under_load_fails_no_request(
    bert_model: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    args = ["--model", str(bert_model), "--redis-url", redis_server.url, "--cache-entries", "0"]
    with run_server(args, log_dir=tmp_path) as server:

        async def load() -> list[int]:
            statuses: list[int] = []
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

                async def worker(offset: int) -> None:
                    for i in range(12):
                        response = await client.post(
                            "/rerank", json=rag_request(offset * 100 + i, count=8)
                        )
                        statuses.append(response.status_code)
                        if response.status_code == 200:
                            assert len(response.json()["results"]) == 8

                async def outage() -> None:
                    while len(statuses) < 15:
                        await asyncio.sleep(0.01)
                    redis_server.kill()

                await asyncio.gather(outage(), *(worker(w) for w in range(4)))
            return statuses

        statuses = asyncio.run(load())
        assert len(statuses) == 48 and set(statuses) == {200}, statuses
        text = httpx.get(server.url + "/metrics").text
        assert metric(text, "rerankd_cache_errors_total", 'backend="redis"') >= 1
        warnings = [
            line for line in server.logs().splitlines() if "redis cache unavailable" in line
        ]
        assert len(warnings) == 1, "the outage is logged once"

        redis_server.start()  # same port: the cache comes back by itself
        time.sleep(1.2)
        for seed in range(3):
            assert (
                httpx.post(
                    server.url + "/rerank", json=rag_request(1000 + seed, count=4), timeout=60
                ).status_code
                == 200
            )
        assert redis_server.keys() > 0
        assert "redis cache is back" in server.logs()


def test_rate_limits_are_shared_through_redis(pair: tuple[ServerProcess, ServerProcess]) -> None:
    body = {"query": "q", "documents": ["d"]}
    statuses = [
        httpx.post(server.url + "/rerank", json=body, timeout=30).status_code for server in pair * 4
    ]
    assert statuses == [200] * 6 + [429] * 2, "both servers count against one limit"
