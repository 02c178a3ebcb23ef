"""The scheduler's promise, proven with a slow fake backend whose batches run one at a time.

The runner blocks each batch until the test lets it go, so what the scheduler puts in the next
batch depends only on what is queued at that moment: no timing, no luck.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import numpy as np
import pytest

from rerankd.batching import DynamicBatcher


class Item:
    def __init__(self, ident: float, length: int) -> None:
        self.ident = ident
        self.length = length

    def __len__(self) -> int:
        return self.length


class GatedRunner:
    """Runs a batch only when `release()` is called; records every batch."""

    def __init__(self) -> None:
        self.batches: list[list[Item]] = []
        self._gate = threading.Semaphore(0)
        self._entered = threading.Semaphore(0)

    def __call__(self, items: list[Item]) -> np.ndarray:
        self.batches.append(items)
        self._entered.release()
        self._gate.acquire()
        return np.array([i.ident for i in items], dtype=np.float64)

    async def running(self) -> None:
        """Wait until a batch has entered the runner (and is held there)."""
        assert await asyncio.to_thread(self._entered.acquire, True, 10), "no batch started"

    def release(self, count: int = 1) -> None:
        for _ in range(count):
            self._gate.release()


class Observer:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def queue_changed(self, pairs: int, tokens: int) -> None:
        pass

    def batch_done(self, *args: float) -> None:
        pass

    def queue_wait(self, waited: float) -> None:
        self.waits.append(waited)

    def rejected(self, reason: str) -> None:
        pass


def idents(batch: list[Item]) -> set[int]:
    return {int(i.ident) // 1000 for i in batch}


def bulk(request: int, count: int, length: int = 300) -> list[Item]:
    return [Item(request * 1000 + i, length + i % 7) for i in range(count)]


@pytest.fixture()
async def gated() -> AsyncIterator[tuple[DynamicBatcher, GatedRunner, Observer]]:
    runner, observer = GatedRunner(), Observer()
    batcher = DynamicBatcher([runner], max_batch_tokens=2048, max_wait_ms=0, observer=observer)
    batcher.start()
    try:
        yield batcher, runner, observer
    finally:
        runner.release(1000)
        batcher.stop()


async def queued(batcher: DynamicBatcher, pairs: int) -> None:
    """Wait until the queue holds `pairs` sequences (submit runs on this loop, so it is quick)."""
    for _ in range(1000):
        if batcher.queued[0] == pairs:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"queue holds {batcher.queued}, expected {pairs} pairs")


async def test_a_small_request_behind_a_large_one_starts_within_one_batch(gated) -> None:
    batcher, runner, observer = gated
    large = asyncio.ensure_future(batcher.submit(bulk(1, 60)))
    await runner.running()  # the large request's first batch is running
    small = asyncio.ensure_future(batcher.submit([Item(2000 + i, 20 + i) for i in range(8)]))
    await queued(batcher, 60 - len(runner.batches[0]) + 8)
    runner.release()
    await runner.running()
    second = runner.batches[1]
    assert idents(second) == {2}, "the next batch is the small request's, and only its"
    runner.release()
    assert list(await small) == [2000 + i for i in range(8)]
    runner.release(100)
    assert list(await large) == [1000 + i for i in range(60)]
    assert len(observer.waits) == 2  # one queue-wait sample per request


async def test_a_less_urgent_small_request_waits_for_all_bulk(gated) -> None:
    """The same arrival with priority 1 (less urgent): priority overrides size, it runs last."""
    batcher, runner, _ = gated
    large = asyncio.ensure_future(batcher.submit(bulk(1, 30)))
    await runner.running()
    small = asyncio.ensure_future(batcher.submit([Item(2000, 20)], priority=1))
    await queued(batcher, 30 - len(runner.batches[0]) + 1)
    runner.release(100)
    await asyncio.gather(large, small)
    assert idents(runner.batches[-1]) == {2}
    assert all(idents(b) == {1} for b in runner.batches[:-1])


async def test_priority_goes_before_size_and_size_before_arrival(gated) -> None:
    batcher, runner, _ = gated
    blocker = asyncio.ensure_future(batcher.submit([Item(9000, 10)]))
    await runner.running()
    big_urgent = asyncio.ensure_future(batcher.submit(bulk(1, 12), priority=-1))
    big = asyncio.ensure_future(batcher.submit(bulk(2, 12)))
    medium = asyncio.ensure_future(batcher.submit(bulk(3, 3)))
    await queued(batcher, 27)
    runner.release(100)
    await asyncio.gather(blocker, big_urgent, big, medium)
    served = [idents(b) for b in runner.batches[1:]]
    urgent_batches = 12 // (2048 // 306)  # 6 rows of ~300 tokens per batch
    assert served[:urgent_batches] == [{1}] * urgent_batches, "priority -1 runs alone, first"
    assert 3 in served[urgent_batches], "then the smaller of the two priority-0 requests"
    assert all(3 not in b for b in served[urgent_batches + 1 :]), "finished in that batch"


async def test_equal_requests_run_in_arrival_order(gated) -> None:
    batcher, runner, _ = gated
    blocker = asyncio.ensure_future(batcher.submit([Item(9000, 10)]))
    await runner.running()
    jobs = [asyncio.ensure_future(batcher.submit(bulk(r, 12))) for r in (1, 2, 3)]
    await queued(batcher, 36)
    runner.release(100)
    await asyncio.gather(blocker, *jobs)
    order = [next(iter(idents(b))) for b in runner.batches[1:]]
    assert list(dict.fromkeys(order)) == [1, 2, 3]


async def test_short_rows_share_a_batch_but_are_never_padded_to_long_ones(gated) -> None:
    batcher, runner, _ = gated
    blocker = asyncio.ensure_future(batcher.submit([Item(9000, 10)]))
    await runner.running()
    large = asyncio.ensure_future(
        batcher.submit([Item(1000 + i, 35 if i < 4 else 300) for i in range(20)])
    )
    small = asyncio.ensure_future(batcher.submit([Item(2000 + i, 30 + i) for i in range(8)]))
    await queued(batcher, 28)
    runner.release(100)
    await asyncio.gather(blocker, large, small)
    first = runner.batches[1]
    assert idents(first) == {1, 2}, "the large request's short rows fit the small one's batch"
    assert max(len(i) for i in first) <= 37, "none longer than the small request's longest"
    for batch in runner.batches:
        lengths = [len(i) for i in batch]
        assert lengths == sorted(lengths) and max(lengths) * len(lengths) <= 2048


async def test_a_cancelled_head_gives_way(gated) -> None:
    batcher, runner, _ = gated
    blocker = asyncio.ensure_future(batcher.submit([Item(9000, 10)]))
    await runner.running()
    doomed = asyncio.ensure_future(batcher.submit([Item(1000, 20)]))
    other = asyncio.ensure_future(batcher.submit(bulk(2, 3)))
    await queued(batcher, 4)
    doomed.cancel()
    await queued(batcher, 3)
    runner.release(100)
    assert list(await other) == [2000, 2001, 2002]
    await blocker
    assert all(1 not in idents(b) for b in runner.batches)
