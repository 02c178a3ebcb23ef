"""The registry as one service across processes: real servers, real Redis, xinference-client.

Three `rerankd serve` processes with their own data directories (pods with an emptyDir) share
one Redis and are reached at random, as behind a Kubernetes Service: a model registered through
one and launched through another is served by all of them, answering 503 + Retry-After (never
404) where it is still loading; terminate through a third and all of them answer 404.
Registrations made concurrently through different processes survive a restart of all of them,
and a process started later serves what is launched. Under gunicorn (two workers, no Redis:
the SQLite store in the data directory) the same flow is consistent through either worker, and
a `kill -HUP` reload under load answers no 503.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from pathlib import Path

import httpx
import pytest

from tests.registry_helpers import register, seed_spec
from tests.server import ServerProcess, _wait_healthy, run_server
from tests.test_asgi import start_gunicorn, stop
from tests.test_redis import RedisServer

BOUND = 60.0  # seconds a test waits for convergence before it fails (the figure is in bench/)
QUERY = "Where is the Eiffel Tower?"
DOCUMENTS = ["The Eiffel Tower is in Paris.", "Bananas are yellow.", "Pods run on nodes."]


def get(url: str, **options: object) -> httpx.Response:
    """A new connection each call (gunicorn's workers take them in turn); a loaded machine."""
    return httpx.get(url, timeout=60, **options)  # type: ignore[arg-type]


def post(url: str, **options: object) -> httpx.Response:
    return httpx.post(url, timeout=120, **options)  # type: ignore[arg-type]


def delete(url: str) -> httpx.Response:
    return httpx.delete(url, timeout=120)


def rerank(url: str, model: str) -> httpx.Response:
    body = {"model": model, "query": QUERY, "documents": DOCUMENTS}
    return post(f"{url}/v1/rerank", json=body)


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, f"not within {BOUND}s: {what}"
        time.sleep(0.05)


class Fleet:
    """N `rerankd serve` processes on one Redis, each with its own data directory."""

    def __init__(self, root: Path, redis_url: str, startup_model: Path) -> None:
        self.root, self.redis_url, self.startup_model = root, redis_url, startup_model
        self.servers: list[ServerProcess] = []
        self._stack = ExitStack()

    def start(self, count: int, first: int = 0) -> list[ServerProcess]:
        started = []
        for index in range(first, first + count):
            args = [
                "--model", f"{self.startup_model}=first", "--max-length", "64",
                "--data-dir", str(self.root / f"data-{index}"), "--redis-url", self.redis_url,
            ]  # fmt: skip
            started.append(
                self._stack.enter_context(run_server(args, log_dir=self.root, wait_ready=False))
            )
        for server in started:  # they load at the same time; wait for each
            _wait_healthy(server, 120)
        self.servers += started
        return started

    def stop(self) -> None:
        self._stack.close()
        self._stack = ExitStack()
        self.servers = []

    def any(self) -> str:
        return random.choice(self.servers).url


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, bert_model: Path) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    redis = RedisServer(root)
    redis.start()
    fleet = Fleet(root, redis.url, bert_model)
    try:
        fleet.start(3)
        yield fleet
    finally:
        fleet.stop()
        redis.kill()


def test_register_launch_terminate_through_different_processes(
    fleet: Fleet, xlmr_model: Path
) -> None:
    from xinference_client import RESTfulClient

    a, b, c = (s.url for s in fleet.servers)
    name = "fleet-seed"
    assert register(a, seed_spec(xlmr_model, model_name=name), persist=True).status_code == 200
    # Launch through another process, without waiting: the others converge on their own.
    launched = post(
        f"{b}/v1/models?wait_ready=false", json={"model_name": name, "model_type": "rerank"}
    )
    assert launched.status_code == 200, launched.text
    uid = launched.json()["model_uid"]

    seen: Counter[int] = Counter()
    serving: set[str] = set()

    def converged() -> bool:
        url = fleet.any()
        response = rerank(url, uid)
        seen[response.status_code] += 1
        if response.status_code == 503:
            assert int(response.headers["Retry-After"]) >= 1
            assert "loading" in response.json()["error"]["message"]
        else:
            assert response.status_code == 200, response.text  # never 404 once launched
            serving.add(url)
        health = get(f"{url}/health", params={"model": uid})
        assert health.status_code in (200, 503), health.text
        return len(serving) == 3

    until(converged, f"all three serve {uid!r}")
    assert set(seen) <= {200, 503}
    # Every process shows the model and that it is in the shared desired state.
    for url in (a, b, c):
        card = get(f"{url}/v1/models/{uid}").json()
        assert card["state"] == "ready" and card["desired"] == "launched"
    statuses = Counter(rerank(fleet.any(), uid).status_code for _ in range(36))
    assert statuses == Counter({200: 36})

    RESTfulClient(c).terminate_model(uid)  # the real client, through a third process
    gone: set[str] = set()

    def stopped() -> bool:
        url = fleet.any()
        response = rerank(url, uid)
        assert response.status_code in (200, 404), response.text
        if response.status_code == 404:
            gone.add(url)
        return len(gone) == 3

    until(stopped, f"all three answer 404 for {uid!r}")
    for url in (a, b, c):
        assert uid not in [m["id"] for m in get(f"{url}/v1/models").json()["data"]]
        assert get(f"{url}/health", params={"model": uid}).status_code == 404


def test_concurrent_registrations_survive_a_restart_and_reach_a_new_process(
    fleet: Fleet, bert_model: Path
) -> None:
    from xinference_client import RESTfulClient

    names = [f"kept-{i}" for i in range(12)]
    urls = [s.url for s in fleet.servers]

    def persist(index: int) -> int:
        spec = seed_spec(bert_model, model_name=names[index])
        return register(urls[index % 3], spec, persist=True).status_code

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(persist, range(len(names)))) == [200] * len(names)
    local = register(urls[0], seed_spec(bert_model, model_name="only-here"), persist=False)
    assert local.status_code == 200 and local.json()["scope"] == "process"
    uid = RESTfulClient(urls[1]).launch_model("kept-3", model_type="rerank")

    fleet.stop()
    # Every process restarts (their data directories are kept), and a fourth one starts with a
    # fresh data directory: a scale-up after the launch.
    later = fleet.start(4)[3]
    for server in fleet.servers:
        registered = [
            r["model_name"] for r in get(f"{server.url}/v1/model_registrations/rerank").json()
        ]
        assert set(names) <= set(registered) and "only-here" not in registered
        # Start-up loads what is launched before the process reports healthy.
        assert rerank(server.url, uid).status_code == 200
    assert get(f"{later.url}/v1/models/{uid}").json()["desired"] == "launched"
    assert delete(f"{later.url}/v1/models/{uid}").status_code == 200
    until(lambda: rerank(fleet.any(), uid).status_code == 404, "terminated everywhere")


# gunicorn, no Redis: the SQLite store -------------------------------------------------------


def test_gunicorn_workers_share_the_registry_and_reload_without_503(
    tmp_path: Path, bert_model: Path, xlmr_model: Path
) -> None:
    log = tmp_path / "gunicorn.log"
    env = {
        "RERANKD_MODEL": f"{bert_model}=first",
        "RERANKD_MAX_LENGTH": "64",
        "RERANKD_DATA_DIR": str(tmp_path / "data"),
    }
    process, url = start_gunicorn(2, env, log)
    try:
        pids: set[int] = set()

        def both_workers() -> bool:
            assert process.poll() is None, log.read_text()
            with suppress(httpx.HTTPError):
                pids.add(httpx.get(f"{url}/info", timeout=5).json()["pid"])
            return len(pids) == 2

        until(both_workers, "both workers answer")
        name = "worker-seed"
        # A new connection each call: the two workers take them in turn.
        for index in range(6):
            spec = seed_spec(xlmr_model, model_name=f"{name}-{index}")
            assert register(url, spec, persist=True).status_code == 200
        listed = get(f"{url}/v1/model_registrations/rerank").json()
        assert {f"{name}-{i}" for i in range(6)} <= {r["model_name"] for r in listed}
        launched = post(f"{url}/v1/models", json={"model_name": f"{name}-0"})
        assert launched.status_code == 200, launched.text
        uid = launched.json()["model_uid"]
        statuses: list[int] = []
        until(lambda: statuses.append(rerank(url, uid).status_code) or statuses[-4:] == [200] * 4,
              "both workers serve the launch")  # fmt: skip
        assert set(statuses) <= {200, 503}

        failures: list[str] = []
        done = threading.Event()

        def load() -> None:
            while not done.is_set():
                for model in ("first", uid):
                    try:
                        response = rerank(url, model)
                    except httpx.HTTPError as exc:
                        failures.append(f"{model}: {type(exc).__name__}")
                        continue
                    if response.status_code != 200:
                        failures.append(f"{model}: {response.status_code} {response.text}")

        worker = threading.Thread(target=load)
        worker.start()
        time.sleep(0.5)
        old = set(pids)
        process.send_signal(signal.SIGHUP)
        fresh: set[int] = set()

        def reloaded() -> bool:
            pid = get(f"{url}/info").json()["pid"]
            if pid not in old:
                fresh.add(pid)
            return len(fresh) == 2

        until(reloaded, "two new workers after HUP")
        time.sleep(0.5)
        done.set()
        worker.join()
        assert failures == [], failures[:5]

        assert delete(f"{url}/v1/models/{uid}").status_code == 200
        statuses = []
        until(lambda: statuses.append(rerank(url, uid).status_code) or statuses[-4:] == [404] * 4,
              "both workers stop the model")  # fmt: skip
        assert set(statuses) <= {200, 404}
        unregistered = delete(f"{url}/v1/model_registrations/rerank/{name}-1")
        assert unregistered.status_code == 200
        listed = get(f"{url}/v1/model_registrations/rerank").json()
        assert f"{name}-1" not in {r["model_name"] for r in listed}
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    finally:
        stop(process)
