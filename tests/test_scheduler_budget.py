"""The scheduler's time budget and its planning pool, with fake costs and gated work: what
runs next depends only on what is queued, never on how fast this machine is."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator

import pytest

from rerankd.batching import DynamicBatcher, MeasuredCost
from rerankd.errors import Overloaded
from rerankd.prep import TOKENIZERS_PARALLELISM, PrepPool, own_the_tokenizer_threads
from tests.test_scheduler import GatedRunner, Item, bulk, idents, queued


class FakeCost:
    """0.1 ms per padded token, or unknown until `known`."""

    def __init__(self, known: bool = True) -> None:
        self.known = known
        self.observed = 0

    def seconds(self, count: int, padded_length: int) -> float | None:
        return count * padded_length * 1e-4 if self.known else None

    def observe(self, count: int, padded_length: int, seconds: float) -> None:
        self.observed += 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
async def budgeted() -> AsyncIterator[tuple[DynamicBatcher, GatedRunner, FakeCost, Clock]]:
    runner, cost, clock = GatedRunner(), FakeCost(), Clock()
    batcher = DynamicBatcher(
        [runner],
        max_batch_tokens=2048,
        max_wait_ms=0,
        max_batch_ms=100,
        cost=cost,
        interactive_window=5.0,
        clock=clock,
    )
    batcher.start()
    try:
        yield batcher, runner, cost, clock
    finally:
        runner.release(1000)
        batcher.stop()


async def _run_bulk(batcher: DynamicBatcher, runner: GatedRunner, request: int) -> list[int]:
    """Sizes of the batches a 12-row bulk request of ~300-token rows runs in."""
    before = len(runner.batches)
    job = asyncio.ensure_future(batcher.submit(bulk(request, 12)))
    while sum(len(b) for b in runner.batches[before:]) < 12:
        await runner.running()
        runner.release()
    await job
    return [len(b) for b in runner.batches[before:]]


async def test_bulk_batches_are_cut_to_the_time_budget_only_while_interactive_work_is_about(
    budgeted,
) -> None:
    batcher, runner, cost, clock = budgeted
    # No interactive request yet: the token budget alone, 6 rows of ~306 tokens in 2048.
    assert await _run_bulk(batcher, runner, 1) == [6, 6]
    small = asyncio.ensure_future(batcher.submit([Item(2000 + i, 150) for i in range(4)]))
    await runner.running()
    runner.release()
    await small
    # An interactive request came (predicted 60 ms; twice that is over max_batch_ms):
    # 0.1 ms x ~306 tokens x 3 rows fits 100 ms, a 4th does not.
    assert await _run_bulk(batcher, runner, 3) == [3, 3, 3, 3]
    clock.now += 6.0  # the interactive window is over: full batches again
    assert await _run_bulk(batcher, runner, 4) == [6, 6]
    assert cost.observed == 2 + 1 + 4 + 2  # every batch run teaches the cost model


async def test_a_quick_interactive_request_cuts_bulk_batches_to_twice_its_own_run(
    budgeted,
) -> None:
    """A fast model's small request (4 rows of 50 tokens: 20 ms predicted) waits for at most
    one bulk batch of 40 ms, not of max_batch_ms; the budget follows the latest one."""
    batcher, runner, _, _ = budgeted
    small = asyncio.ensure_future(batcher.submit([Item(2000 + i, 50) for i in range(4)]))
    await runner.running()
    runner.release()
    await small
    assert await _run_bulk(batcher, runner, 1) == [1] * 12  # one ~31 ms row fits 40 ms
    bigger = asyncio.ensure_future(batcher.submit([Item(3000 + i, 100) for i in range(4)]))
    await runner.running()
    runner.release()
    await bigger
    assert await _run_bulk(batcher, runner, 2) == [2] * 6  # 40 ms predicted: 80 ms batches


async def test_an_unmeasured_cost_does_not_cut_batches(budgeted) -> None:
    batcher, runner, cost, _ = budgeted
    cost.known = False
    small = asyncio.ensure_future(batcher.submit([Item(2000, 30)]))
    await runner.running()
    runner.release()
    await small
    assert await _run_bulk(batcher, runner, 1) == [6, 6]


async def test_an_interactive_request_runs_before_queued_bulk_and_whole(budgeted) -> None:
    """The head is interactive: its batch is not cut to the budget (1,600 tokens predict
    160 ms, over 100 ms), and it goes before the bulk request queued ahead of it."""
    batcher, runner, _, _ = budgeted
    blocker = asyncio.ensure_future(batcher.submit([Item(9000, 10)]))
    await runner.running()
    large = asyncio.ensure_future(batcher.submit(bulk(1, 12)))
    small = asyncio.ensure_future(batcher.submit([Item(2000 + i, 200) for i in range(8)]))
    await queued(batcher, 20)
    runner.release(100)
    await asyncio.gather(blocker, large, small)
    assert idents(runner.batches[1]) == {2} and len(runner.batches[1]) == 8
    assert [len(b) for b in runner.batches[2:]] == [3, 3, 3, 3], "bulk cut to the budget"


def test_measured_cost_follows_the_batches_it_sees() -> None:
    cost = MeasuredCost(weight=0.5)
    assert cost.seconds(4, 100) is None
    cost.observe(4, 100, 0.4)  # 1 ms per padded token
    assert cost.seconds(2, 50) == pytest.approx(0.1)
    cost.observe(1, 100, 0.3)  # 3 ms: the average moves halfway
    assert cost.seconds(1, 1000) == pytest.approx(2.0)
    cost.observe(0, 100, 1.0)  # nothing run: ignored
    assert cost.seconds(1, 1000) == pytest.approx(2.0)


async def test_the_planning_pool_runs_a_small_job_while_large_ones_hold_every_worker() -> None:
    pool = PrepPool(workers=2, express_chars=1000)
    gate, started, order = threading.Event(), threading.Event(), []

    def job(name: str, wait: bool) -> str:
        if wait:
            started.set()
            gate.wait(10)
        order.append(name)
        return name

    try:
        first = asyncio.ensure_future(pool.run(lambda: job("giant-1", True), chars=500_000))
        assert await asyncio.to_thread(started.wait, 10), "the general worker has taken it"
        large = asyncio.ensure_future(pool.run(lambda: job("giant-2", False), chars=400_000))
        medium = asyncio.ensure_future(pool.run(lambda: job("medium", False), chars=200_000))
        await asyncio.sleep(0)
        small = await asyncio.wait_for(pool.run(lambda: job("small", False), chars=200), 10)
        assert small == "small" and order == ["small"], "the express worker ran it at once"
        assert not large.done() and pool.queued_chars == 600_000
        gate.set()
        assert await asyncio.gather(first, large, medium) == ["giant-1", "giant-2", "medium"]
        assert order == ["small", "giant-1", "medium", "giant-2"], "fewer characters first"
    finally:
        gate.set()
        pool.stop()


async def test_requests_being_planned_count_against_the_queue() -> None:
    """Two giant requests arriving together: the second is refused while the first is still
    being tokenized (it never reached the queue), then admitted once it has run."""
    runner = GatedRunner()
    batcher = DynamicBatcher([runner], max_batch_tokens=2048, max_queue_tokens=1000)
    batcher.start()
    gate = threading.Event()
    try:
        first = asyncio.ensure_future(batcher.prepare(lambda: gate.wait(10), 800, 10**6))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as refused:
            await batcher.prepare(lambda: True, 800, 10**6)
        assert refused.value.retry_after is not None and refused.value.retry_after >= 1
        assert await batcher.prepare(lambda: "small", 150, 600) == "small", "a small one fits"
        gate.set()
        assert await first is True
        assert await batcher.prepare(lambda: "next", 800, 10**6) == "next"
    finally:
        gate.set()
        batcher.stop()


def test_a_server_turns_the_tokenizers_own_thread_pool_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its planning parallelism is the PrepPool's; an operator's explicit choice stands."""
    from rerankd.api import create_app
    from rerankd.config import Settings

    monkeypatch.delenv(TOKENIZERS_PARALLELISM, raising=False)
    create_app(Settings(model=["builtin"]))
    assert os.environ[TOKENIZERS_PARALLELISM] == "false"
    monkeypatch.setenv(TOKENIZERS_PARALLELISM, "true")
    own_the_tokenizer_threads()
    assert os.environ[TOKENIZERS_PARALLELISM] == "true"
