"""Faults on a real server: a backend that raises on one batch, a backend that hangs past the
request timeout, model files removed after load. See tests/fault_server.py for the injection."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fault_server import CRASH, HANG, RAISE
from tests.server import ServerProcess, metric, run_server

HANG_SECONDS = 4.0


@pytest.fixture(scope="module")
def model_copy(bert_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's server loads this copy: the last test removes its files."""
    copy = tmp_path_factory.mktemp("faults-model") / "model"
    shutil.copytree(bert_model, copy)
    return copy


@pytest.fixture(scope="module")
def server(model_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--model", f"{model_copy}=tiny-bert", "--max-length", "64", "--threads", "1"]
    args += ["--request-timeout", "1.5", "--cache-entries", "0"]
    env = {"RERANKD_TEST_HANG_SECONDS": str(HANG_SECONDS)}
    with run_server(
        args, env=env, log_dir=tmp_path_factory.mktemp("faults"), module="tests.fault_server"
    ) as running:
        yield running


def body(*documents: str) -> dict:
    return {"query": "q", "documents": list(documents)}


def test_a_backend_error_fails_only_its_batch(server: ServerProcess) -> None:
    async def run() -> tuple[httpx.Response, list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            poisoned = client.post("/rerank", json=body("fine", f"boom {RAISE}"))
            others = [client.post("/v1/rerank", json=body(f"other {i}")) for i in range(6)]
            first, *rest = await asyncio.gather(poisoned, *others)
            return first, rest

    failed, others = asyncio.run(run())
    assert failed.status_code == 500
    assert failed.json()["error"]["type"] == "backend_error"
    assert "secret" not in failed.text and "CUDA" not in failed.text
    # Requests that shared its batch fail with it (a batch is one backend call); no other does.
    shared = [r for r in others if r.status_code == 500]
    assert all(r.json()["error"]["type"] == "backend_error" for r in shared)
    assert all(r.status_code in (200, 500) for r in others)
    after = [
        httpx.post(server.url + "/rerank", json=body(f"after {i}"), timeout=60) for i in range(3)
    ]
    assert [r.status_code for r in after] == [200, 200, 200]
    # Logged once, with its traceback, by the batcher; not again per request or by uvicorn.
    lines = [json.loads(x) for x in server.logs().splitlines() if x.startswith("{")]
    tracebacks = [x for x in lines if "secret internals" in x.get("exception", "")]
    assert len(tracebacks) == 1 and tracebacks[0]["logger"] == "rerankd.batching"
    assert not any("Exception in ASGI application" in x["msg"] for x in lines)


def test_an_unexpected_error_is_a_bare_500_logged_once(server: ServerProcess) -> None:
    response = httpx.post(
        server.url + "/rerank",
        json={"query": f"q {CRASH}", "documents": ["d"]},
        headers={"X-Request-ID": "crash-1"},
        timeout=60,
    )
    assert response.status_code == 500
    assert response.json()["error"] == {
        "message": "internal server error",
        "type": "internal_error",
        "code": 500,
    }
    assert "secret" not in response.text
    lines = [json.loads(x) for x in server.logs().splitlines() if x.startswith("{")]
    tracebacks = [x for x in lines if "secret planner" in x.get("exception", "")]
    assert len(tracebacks) == 1 and tracebacks[0]["request_id"] == "crash-1"
    assert not any("Exception in ASGI application" in x["msg"] for x in lines)
    assert httpx.post(server.url + "/rerank", json=body("fine"), timeout=60).status_code == 200


def test_a_hung_backend_times_out_and_the_thread_comes_back(server: ServerProcess) -> None:
    metrics = httpx.get(server.url + "/metrics").text
    batches = metric(metrics, "rerankd_batch_inference_seconds_count")
    hung = httpx.post(server.url + "/rerank", json=body(f"slow {HANG}"), timeout=60)
    assert hung.status_code == 504 and hung.json()["error"]["type"] == "timeout_error"
    # The event loop is free while the inference thread hangs.
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200
    metrics = httpx.get(server.url + "/metrics").text
    assert metric(metrics, "rerankd_queue_pairs") == 0, "the timed-out request left the queue"
    deadline = time.monotonic() + HANG_SECONDS + 30
    while time.monotonic() < deadline:  # the stuck call returns; its thread serves again
        metrics = httpx.get(server.url + "/metrics").text
        if metric(metrics, "rerankd_batch_inference_seconds_count") > batches:
            break
        time.sleep(0.2)
    assert (
        httpx.post(server.url + "/rerank", json=body("afterwards"), timeout=60).status_code == 200
    )


def test_model_files_removed_after_load_change_nothing(
    server: ServerProcess, model_copy: Path
) -> None:
    """On the module's server (no cache: every answer is computed), last in this module."""
    request = body("Paris is in France.", "Bananas are yellow.")
    before = httpx.post(server.url + "/rerank", json=request, timeout=60).json()
    shutil.rmtree(model_copy)
    for _ in range(3):
        after = httpx.post(server.url + "/rerank", json=request, timeout=60)
        assert after.status_code == 200 and after.json()["results"] == before["results"]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
