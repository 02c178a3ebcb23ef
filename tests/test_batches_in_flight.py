"""Two batches in flight per replica (`--batches-in-flight`, the GPU default): the next batch is
collated and copied while one runs. On a CPU the same workers run, so the scheduling and the
server path are tested here; the CUDA streams themselves need a device."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from rerankd.batching import DynamicBatcher
from rerankd.engine.options import default_batches_in_flight
from tests.server import run_server


class Item:
    def __init__(self, ident: float, length: int) -> None:
        self.ident, self.length = ident, length

    def __len__(self) -> int:
        return self.length


def test_a_gpu_runs_two_batches_at_once_and_a_cpu_one() -> None:
    assert default_batches_in_flight("cuda") == 2
    assert default_batches_in_flight("cuda:1") == 2
    assert default_batches_in_flight("cpu") == 1


async def test_the_next_batch_starts_while_one_is_still_running() -> None:
    """Each batch waits at a barrier for a second one: with one batch at a time it would
    wait forever (the barrier times out and breaks); with two in flight both pass."""
    meeting = threading.Barrier(2, timeout=10)

    def runner(items: list[Item]) -> np.ndarray:
        meeting.wait()
        return np.array([item.ident for item in items])

    batcher = DynamicBatcher([runner, runner], max_batch_tokens=256, max_wait_ms=0)
    assert batcher.workers == 2
    batcher.start()
    try:
        first = [Item(float(i), 200) for i in range(2)]  # 400 tokens: a batch per row
        second = [Item(float(10 + i), 200) for i in range(2)]  # four batches: two pairs meet
        results = await asyncio.gather(batcher.submit(first), batcher.submit(second))
    finally:
        batcher.stop()
    assert [list(r) for r in results] == [[0.0, 1.0], [10.0, 11.0]]  # each row its own


async def test_one_batch_at_a_time_never_overlaps() -> None:
    running, overlapped = [0], [False]
    lock = threading.Lock()

    def runner(items: list[Item]) -> np.ndarray:
        with lock:
            running[0] += 1
            overlapped[0] |= running[0] > 1
        threading.Event().wait(0.01)
        with lock:
            running[0] -= 1
        return np.array([item.ident for item in items])

    batcher = DynamicBatcher([runner], max_batch_tokens=256, max_wait_ms=0)
    batcher.start()
    try:
        jobs = [batcher.submit([Item(float(i), 200), Item(float(i), 200)]) for i in range(4)]
        await asyncio.gather(*jobs)
    finally:
        batcher.stop()
    assert not overlapped[0]


@pytest.mark.parametrize("in_flight", [2])
def test_a_server_with_two_batches_in_flight_scores_as_one(
    bert_model: Path, tmp_path: Path, in_flight: int
) -> None:
    texts = [f"passage {i} " + "about rerankers and search " * (i % 9 + 1) for i in range(40)]
    body = {"query": "what does a reranker do", "texts": texts}
    answers = {}
    for flight in (1, in_flight):
        args = ["--model", f"{bert_model}=tiny-bert", "--backend", "torch", "--max-length", "128"]
        args += ["--batches-in-flight", str(flight), "--max-batch-tokens", "256"]
        args += ["--cache-entries", "0"]
        with run_server(args, log_dir=tmp_path) as server:
            model = httpx.get(f"{server.url}/v1/models/tiny-bert", timeout=30).json()
            assert model["batches_in_flight"] == flight

            def ask(_: int, url: str = server.url) -> dict[int, float]:
                reply = httpx.post(f"{url}/rerank", json=body, timeout=60)
                reply.raise_for_status()
                return {row["index"]: row["score"] for row in reply.json()}

            with ThreadPoolExecutor(4) as pool:  # concurrent requests share the workers
                replies = list(pool.map(ask, range(8)))
            for reply in replies:  # batched with different neighbours: padding differs
                assert close(reply, replies[0])
            answers[flight] = replies[0]
    assert close(answers[1], answers[in_flight])


def close(one: dict[int, float], other: dict[int, float]) -> bool:
    return one.keys() == other.keys() and max(abs(one[i] - other[i]) for i in one) < 1e-5


def test_more_batches_in_flight_than_four_is_refused(bert_model: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "rerankd", "serve", "--model", str(bert_model)]
    failed = subprocess.run(
        [*command, "--batches-in-flight", "9"], capture_output=True, text=True, timeout=120
    )
    assert failed.returncode == 2
    assert "batches-in-flight" in failed.stderr or "batches_in_flight" in failed.stderr
