"""DynamicBatcher on its own, with a runner that records every batch it is given."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from rerankd.batching import DynamicBatcher, cut_batches
from rerankd.errors import BackendFailed, Overloaded


class Item:
    """A fake sequence: its length and an id the runner echoes back."""

    def __init__(self, ident: float, length: int) -> None:
        self.ident = ident
        self.length = length

    def __len__(self) -> int:
        return self.length


class RecordingRunner:
    def __init__(self, delay: float = 0.0, fail_on: float | None = None) -> None:
        self.batches: list[list[Item]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.started = threading.Event()

    def __call__(self, items: list[Item]) -> np.ndarray:
        self.started.set()
        self.batches.append(items)
        time.sleep(self.delay)
        if self.fail_on is not None and any(i.ident == self.fail_on for i in items):
            raise RuntimeError("boom")
        return np.array([i.ident for i in items], dtype=np.float64)


def test_cut_batches_respects_the_padded_token_budget() -> None:
    lengths = [10, 10, 20, 30, 40, 100, 400, 900]
    batches = cut_batches(lengths, max_batch_tokens=200, max_batch_size=64)
    assert [list(b) for b in batches] == [[0, 1, 2, 3, 4], [5], [6], [7]]
    for batch in batches:
        longest = lengths[batch[-1]]
        assert longest * len(batch) <= 200 or len(batch) == 1
    assert [list(b) for b in cut_batches([5] * 10, 1000, max_batch_size=4)] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
    ]
    assert cut_batches([], 100, 4) == []


@pytest.fixture()
def runner() -> RecordingRunner:
    return RecordingRunner(delay=0.02)


async def test_concurrent_requests_share_sorted_batches(runner: RecordingRunner) -> None:
    batcher = DynamicBatcher([runner], max_batch_tokens=4096, max_wait_ms=5)
    batcher.start()
    try:
        requests = [
            [Item(r * 100 + i, length=(r * 37 + i * 11) % 90 + 5) for i in range(8)]
            for r in range(6)
        ]
        results = await asyncio.gather(*(batcher.submit(items) for items in requests))
    finally:
        batcher.stop()
    for items, result in zip(requests, results, strict=True):
        assert list(result) == [i.ident for i in items]  # every row back in the caller's order
    mixed = [b for b in runner.batches if len({int(i.ident) // 100 for i in b}) > 1]
    assert mixed, "batches should mix pairs from different requests"
    for batch in runner.batches:
        lengths = [len(i) for i in batch]
        assert lengths == sorted(lengths)
        assert max(lengths) * len(lengths) <= 4096


async def test_backend_error_fails_only_its_batch(runner: RecordingRunner) -> None:
    failing = RecordingRunner(fail_on=1.0)
    batcher = DynamicBatcher([failing], max_batch_tokens=50, max_wait_ms=0)
    batcher.start()
    try:
        bad, good = await asyncio.gather(
            batcher.submit([Item(1.0, 40)]), batcher.submit([Item(2.0, 45)]), return_exceptions=True
        )
        assert isinstance(bad, BackendFailed) and "failed" in str(bad)
        assert list(good) == [2.0]
        assert list(await batcher.submit([Item(3.0, 10)])) == [3.0]  # the thread survived
    finally:
        batcher.stop()


async def test_overload_is_refused_at_once_and_the_queue_drains() -> None:
    slow = RecordingRunner(delay=0.3)
    batcher = DynamicBatcher([slow], max_batch_tokens=100, max_queue_tokens=250, max_wait_ms=0)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit([Item(1, 100)]))
        await asyncio.to_thread(slow.started.wait, 5)
        queued = asyncio.ensure_future(batcher.submit([Item(2, 100), Item(3, 100)]))
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as refused:
            await batcher.submit([Item(4, 100)])
        # Refused without waiting: the work ahead of it is still queued behind the slow batch.
        assert not queued.done() and batcher.queued == (2, 200)
        assert refused.value.retry_after
        assert list(await first) == [1] and list(await queued) == [2, 3]
        assert batcher.queued == (0, 0)
    finally:
        batcher.stop()


async def test_cancelled_request_has_its_queued_pairs_dropped() -> None:
    slow = RecordingRunner(delay=0.2)
    batcher = DynamicBatcher([slow], max_batch_tokens=100, max_wait_ms=0)
    batcher.start()
    try:
        busy = asyncio.ensure_future(batcher.submit([Item(1, 100)]))
        await asyncio.to_thread(slow.started.wait, 5)
        doomed = asyncio.ensure_future(batcher.submit([Item(66, 50), Item(67, 50)]))
        await asyncio.sleep(0.01)
        assert batcher.queued == (2, 100)
        doomed.cancel()
        await asyncio.sleep(0.01)
        assert batcher.queued == (0, 0)
        await busy
        assert list(await batcher.submit([Item(5, 10)])) == [5]
    finally:
        batcher.stop()
    assert all(i.ident not in (66, 67) for batch in slow.batches for i in batch)


async def test_several_replicas_share_one_queue() -> None:
    runners = [RecordingRunner(delay=0.05), RecordingRunner(delay=0.05)]
    batcher = DynamicBatcher(runners, max_batch_tokens=100, max_wait_ms=0)
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit([Item(i, 90)]) for i in range(12)))
    finally:
        batcher.stop()
    assert [list(r) for r in results] == [[i] for i in range(12)]
    assert all(r.batches for r in runners), "both replicas should have run batches"
