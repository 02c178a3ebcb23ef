"""Models coming and going beside one under load, and the memory a terminated model leaves.

- A second model is launched and terminated while concurrent requests run against the first:
  none of them fails; requests in flight on the terminated model finish with 200; after it is
  gone, a request for it gets 404 naming the served models.
- After terminate, the server's RSS comes back to within 10% of its level before the launch
  (the MiniLM-size benchmark model: ~90 MB of weights, large enough to see).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.registry_helpers import launch, register, seed_spec
from tests.server import ServerProcess, run_server

QUERY = "which passage talks about the capital of France?"
SHORT = ["Paris is the capital of France.", "Bananas are yellow.", "Rome is in Italy."]
LONG = [
    f"Passage {i}: the Eiffel Tower stands in Paris, and the Seine runs through the city "
    "while tourists walk along its banks looking at the bridges and the museums. " * 4
    for i in range(48)
]
LOAD_CLIENTS = 3
MAX_LOAD_SECONDS = 240  # the load stops when the churn is done, or at this bound


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.fixtures import model_dir

    return model_dir("minilm-l6", root=tmp_path_factory.mktemp("bench-models"))


def rss_bytes(server: ServerProcess) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def rerank(url: str, model: str, documents: list[str]) -> httpx.Response:
    body = {"query": QUERY, "documents": documents, "model": model, "return_documents": False}
    return httpx.post(f"{url}/rerank", json=body, timeout=120)


def test_launch_and_terminate_beside_a_loaded_model(
    bert_model: Path, minilm: Path, tmp_path: Path
) -> None:
    args = ["--model", f"{bert_model}=first", "--data-dir", str(tmp_path / "data"),
            "--max-length", "256", "--cache-entries", "0"]  # fmt: skip
    with run_server(args, log_dir=tmp_path) as server:
        url = server.url
        assert register(url, seed_spec(minilm, model_name="second")).status_code == 200
        statuses: list[int] = []
        stop = threading.Event()

        def load() -> None:
            deadline = time.monotonic() + MAX_LOAD_SECONDS
            while not stop.is_set() and time.monotonic() < deadline:
                statuses.append(rerank(url, "first", SHORT).status_code)

        with ThreadPoolExecutor(LOAD_CLIENTS + 4) as pool:
            loaders = [pool.submit(load) for _ in range(LOAD_CLIENTS)]
            try:
                churn(url, pool)
            finally:
                stop.set()
            for loader in loaders:
                loader.result()
        assert statuses and all(code == 200 for code in statuses), sorted(set(statuses))
        metrics = httpx.get(f"{url}/metrics").text
        assert 'rerankd_pairs_scored_total{model="first"}' in metrics
        # The terminated model's series are gone; the registration's load count stays.
        for series in ("rerankd_pairs_scored_total", "rerankd_model_state", "rerankd_queue_pairs"):
            assert f'{series}{{model="second"' not in metrics
        assert 'rerankd_model_loads_total{model="second"} 1.0' in metrics


def churn(url: str, pool: ThreadPoolExecutor) -> None:
    """Launch the second model, put requests in flight on it, terminate it, ask for it again."""
    launched = launch(url, "second")
    assert launched.status_code == 200, launched.text

    # Requests on the second model, in flight when it is terminated.
    in_flight = [pool.submit(rerank, url, "second", LONG[:12]) for _ in range(4)]
    # Terminate once every request not yet answered is in flight on the model (one still on its
    # way to the server when the model goes would get a 404, rightly, and fail the check below).
    for _ in range(3000):
        in_flight_now = httpx.get(f"{url}/v1/models/second").json()["in_flight"]
        if in_flight_now > 0 and in_flight_now >= sum(not f.done() for f in in_flight):
            break
        time.sleep(0.005)
    terminated = httpx.delete(f"{url}/v1/models/second", timeout=300)
    assert terminated.status_code == 200, terminated.text
    assert terminated.json()["drained_requests"] >= 1
    assert [f.result().status_code for f in in_flight] == [200] * 4

    after = rerank(url, "second", SHORT)
    assert after.status_code == 404
    assert "'first'" in after.json()["error"]["message"]


def test_terminate_gives_the_memory_back(minilm: Path, tmp_path: Path) -> None:
    args = ["--model", "builtin", "--data-dir", str(tmp_path / "data"), "--cache-entries", "0"]
    with run_server(args, log_dir=tmp_path) as server:
        url = server.url
        for _ in range(3):  # the first requests allocate what every later one reuses
            assert rerank(url, "builtin", LONG[:16]).status_code == 200
        assert register(url, seed_spec(minilm, model_name="big")).status_code == 200
        before = rss_bytes(server)
        assert launch(url, "big").status_code == 200
        for _ in range(3):
            assert rerank(url, "big", LONG[:16]).status_code == 200
        loaded = rss_bytes(server)
        assert httpx.delete(f"{url}/v1/models/big", timeout=300).status_code == 200
        after = rss_bytes(server)
        print(
            f"RSS before {before / 2**20:.0f} MiB, loaded {loaded / 2**20:.0f} MiB, "
            f"after terminate {after / 2**20:.0f} MiB"
        )
        assert loaded > before + 60 * 2**20  # the model is big enough to see
        assert after <= before * 1.10
