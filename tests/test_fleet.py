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

import os
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
from tests.server import ServerProcess, _wait_healthy, metric, run_server
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


def unread_retried(call: Callable[[], httpx.Response]) -> httpx.Response:
    """`call`, once more if the server closed the connection before reading the request.

    A worker that gunicorn retires closes the connections it accepted but has not read a
    request from yet (uvicorn's graceful shutdown); the request never reached rerankd, so a
    client (or a load balancer) sends it again. Anything else, a 503 included, is an answer.
    """
    try:
        return call()
    except httpx.RemoteProtocolError as exc:
        if "without sending a response" not in str(exc):
            raise
        return call()


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, f"not within {BOUND}s: {what}"
        time.sleep(0.05)


class Fleet:
    """N `rerankd serve` processes on one Redis, each with its own data directory."""

    def __init__(self, root: Path, redis: RedisServer, startup_model: Path) -> None:
        self.root, self.redis, self.startup_model = root, redis, startup_model
        self.redis_url = redis.url
        self.servers: list[ServerProcess] = []
        self._stack = ExitStack()

    def start(self, count: int, first: int = 0) -> list[ServerProcess]:
        started = []
        for index in range(first, first + count):
            args = [
                "--model", f"{self.startup_model}=first", "--max-length", "64",
                "--data-dir", str(self.root / f"data-{index}"), "--redis-url", self.redis_url,
                "--rate-limit", "100000/minute",  # held in Redis: fails open when it stalls
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
    fleet = Fleet(root, redis, bert_model)
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


FREEZE = 4.0  # seconds Redis is stopped
ANSWER_WITHIN = 2.0  # the bound on every answer while it is


def test_a_frozen_redis_leaves_loaded_models_served_and_the_fleet_reconverges(
    fleet: Fleet, bert_model: Path
) -> None:
    """SIGSTOP the Redis that holds the desired state, the rate limits and the shared cache:
    every process keeps answering reranks of the model it runs within 2 s (rate limits fail
    open, counted), /health stays 200 (the process serves) and a model nobody launched stays
    404, a registry change is refused (503) rather than half-made, and
    rerankd_registry_store_up says the store is down; after SIGCONT it is up again and a
    change made through one process reaches all of them."""
    urls = [s.url for s in fleet.servers]
    for url in urls:
        assert rerank(url, "first").status_code == 200
    before = {url: get(f"{url}/metrics").text for url in urls}
    assert all(metric(text, "rerankd_registry_store_up") == 1 for text in before.values())
    assert fleet.redis.process is not None
    pid = fleet.redis.process.pid
    answers: list[tuple[str, str, int, float]] = []  # (url, what, status, seconds)
    lock = threading.Lock()

    def probe(url: str, stop_at: float) -> None:
        n = 0
        with httpx.Client(base_url=url, timeout=ANSWER_WITHIN) as http:
            while time.monotonic() < stop_at:
                n += 1
                body = {"model": "first", "query": f"frozen {n}", "documents": DOCUMENTS}
                calls = [
                    ("rerank", "POST", "/v1/rerank", {"json": body}),
                    ("health", "GET", "/health", {}),
                    ("health first", "GET", "/health", {"params": {"model": "first"}}),
                    ("nobody", "POST", "/v1/rerank", {"json": {**body, "model": "nobody"}}),
                ]
                for what, method, path, options in calls:
                    started = time.monotonic()
                    try:
                        status = http.request(method, path, **options).status_code
                    except httpx.TimeoutException:
                        status = 0  # no answer within the bound
                    with lock:
                        answers.append((url, what, status, time.monotonic() - started))

    os.kill(pid, signal.SIGSTOP)
    try:
        stop_at = time.monotonic() + FREEZE
        threads = [threading.Thread(target=probe, args=(url, stop_at)) for url in urls]
        for thread in threads:
            thread.start()
        refused = register(urls[0], seed_spec(bert_model, model_name="while-frozen"), persist=True)
        for thread in threads:
            thread.join()
        frozen = {url: get(f"{url}/metrics").text for url in urls}  # each poll has timed out
    finally:
        os.kill(pid, signal.SIGCONT)

    assert all(metric(text, "rerankd_registry_store_up") == 0 for text in frozen.values())

    assert refused.status_code == 503, refused.text
    by_kind: dict[str, Counter[int]] = {}
    for _, what, status, _ in answers:
        by_kind.setdefault(what, Counter())[status] += 1
    assert set(by_kind["rerank"]) == {200}, by_kind
    assert set(by_kind["health"]) == {200} and set(by_kind["health first"]) == {200}, by_kind
    assert set(by_kind["nobody"]) == {404}, by_kind
    assert {url for url, what, _, _ in answers if what == "rerank"} == set(urls)
    slowest = max(seconds for *_, seconds in answers)
    assert slowest < ANSWER_WITHIN, slowest
    for url in urls:
        text = get(f"{url}/metrics").text
        failed = 'action="served"'
        assert metric(text, "rerankd_rate_limit_errors_total", failed) > metric(
            before[url], "rerankd_rate_limit_errors_total", failed
        ), "each failed rate-limit check is counted"

    until(
        lambda: all(
            metric(get(f"{url}/metrics").text, "rerankd_registry_store_up") == 1 for url in urls
        ),
        "every process finds the store up again",
    )
    name = "after-thaw"  # back: a change through one process reaches every process
    until(
        lambda: (
            register(urls[1], seed_spec(bert_model, model_name=name), persist=True).status_code
            == 200
        ),
        "the store takes changes again",
    )
    until(
        lambda: all(
            name in [r["model_name"] for r in get(f"{url}/v1/model_registrations/rerank").json()]
            for url in urls
        ),
        f"every process knows {name!r}",
    )
    assert all(rerank(url, "first").status_code == 200 for url in urls)
    for url in urls:
        registered = [r["model_name"] for r in get(f"{url}/v1/model_registrations/rerank").json()]
        assert "while-frozen" not in registered, "a refused change was not half-applied"


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
                        response = unread_retried(lambda m=model: rerank(url, m))
                    except httpx.HTTPError as exc:
                        failures.append(f"{model}: {type(exc).__name__}")
                        continue
                    if response.status_code != 200:
                        failures.append(f"{model}: {response.status_code} {response.text}")

        # A daemon, stopped in `finally`: a failed assertion must not leave it looping (a
        # non-daemon thread would keep pytest from exiting).
        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        try:
            time.sleep(0.5)
            old = set(pids)
            process.send_signal(signal.SIGHUP)
            fresh: set[int] = set()

            def reloaded() -> bool:
                pid = unread_retried(lambda: get(f"{url}/info")).json()["pid"]
                if pid not in old:
                    fresh.add(pid)
                return len(fresh) == 2

            until(reloaded, "two new workers after HUP")
            time.sleep(0.5)
        finally:
            done.set()
            worker.join(timeout=120)
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
