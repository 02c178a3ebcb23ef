"""Cheap refusals and bounded work, in process: admission before tokenization, Retry-After
from the drain rate, the server's cap on chunks, 504 for a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from rerankd.admission import DrainRate, estimate_chars, estimate_tokens
from rerankd.batching import DynamicBatcher
from rerankd.config import Settings
from rerankd.errors import Overloaded, RequestTimeout
from rerankd.service import RerankRequest, RerankService
from tests.test_batching import Item, RecordingRunner


def test_the_estimate_follows_characters_and_never_passes_the_model_limit() -> None:
    assert estimate_tokens(40, [400, 4], max_length=512, max_sequences_per_doc=1) == 110 + 11
    # A 1 MB document with truncation costs at most one sequence of max_length.
    assert estimate_tokens(10, [1_000_000], max_length=512, max_sequences_per_doc=1) == 512
    assert estimate_tokens(10, [1_000_000], max_length=512, max_sequences_per_doc=16) == 8192
    # Chunked: 2,400 characters are 600 tokens, two windows of 502 document tokens each
    # carrying the 10-token query again.
    assert estimate_tokens(40, [2400], max_length=512, max_sequences_per_doc=16) == 620
    assert estimate_tokens(40, [2400], max_length=512, max_sequences_per_doc=1) == 512


def test_the_tokenization_estimate_is_the_text_left_after_the_cut() -> None:
    # 32 characters a token may reach: a 512-token model tokenizes 16,384 of a giant document.
    assert estimate_chars(10, [1_000_000, 300], max_length=512, max_sequences_per_doc=1) == (
        10 + 16_384 + 300
    )
    assert estimate_chars(0, [1_000_000], max_length=512, max_sequences_per_doc=16) == 262_144


def test_retry_after_follows_the_drain_rate() -> None:
    rate = DrainRate(window=10, replicas=2)
    assert rate.retry_after(10_000, now=0.0) == 1.0  # nothing drained yet: the floor
    for second in range(10):
        rate.add(500, seconds=1.0, now=float(second))  # each replica: 500 tokens/s when busy
    assert rate.per_second(now=10.0) == pytest.approx(1000.0)
    assert rate.retry_after(20_000, now=10.0) == pytest.approx(20.0)
    assert rate.retry_after(10, now=10.0) == 1.0
    assert rate.retry_after(10**9, now=10.0) == 60.0
    assert rate.per_second(now=100.0) is None  # the window forgets
    idle = DrainRate(window=10)
    idle.add(1000, seconds=0.1, now=0.0)  # one batch in ten quiet seconds: speed, not traffic
    assert idle.per_second(now=9.0) == pytest.approx(10_000.0)


async def test_the_queue_is_bounded_by_what_drains_before_the_timeout() -> None:
    slow = RecordingRunner(delay=0.2)  # 100 tokens in 0.2 s: 500 tokens/s
    batcher = DynamicBatcher(
        [slow], max_batch_tokens=100, max_queue_tokens=10_000, max_queue_seconds=2.0, max_wait_ms=0
    )
    batcher.start()
    try:
        await batcher.submit([Item(0, 100)])  # one batch teaches the batcher its speed
        slow.started.clear()
        running = asyncio.ensure_future(batcher.submit([Item(1, 100)]))
        await asyncio.to_thread(slow.started.wait, 5)
        queued = asyncio.ensure_future(batcher.submit([Item(2, 100), Item(3, 100)]))
        await asyncio.sleep(0.01)
        assert batcher.queued == (2, 200)
        # At most 500 tokens/s (the sleep is a floor); margins wide enough for a busy machine.
        batcher.admit(50)  # 250 tokens: within 2 s unless the batch took over 0.8 s
        with pytest.raises(Overloaded, match="drains before the timeout") as refused:
            batcher.admit(1500)  # 1,700 tokens need at least 3.4 s: it would time out
        assert refused.value.retry_after is not None and refused.value.retry_after >= 1
        await asyncio.gather(running, queued)
    finally:
        batcher.stop()


async def test_admit_refuses_from_the_queue_state_alone() -> None:
    slow = RecordingRunner(delay=0.3)
    batcher = DynamicBatcher([slow], max_batch_tokens=100, max_queue_tokens=250, max_wait_ms=0)
    batcher.start()
    try:
        batcher.admit(10_000)  # an empty queue takes anything
        running = asyncio.ensure_future(batcher.submit([Item(1, 100)]))
        await asyncio.to_thread(slow.started.wait, 5)
        queued = asyncio.ensure_future(batcher.submit([Item(2, 100), Item(3, 100)]))
        await asyncio.sleep(0.01)
        batcher.admit(50)  # fits: 200 + 50 <= 250
        with pytest.raises(Overloaded) as refused:
            batcher.admit(51)
        assert refused.value.retry_after is not None and refused.value.retry_after >= 1
        assert list(await running) == [1] and list(await queued) == [2, 3]
        batcher.admit(10_000)
    finally:
        batcher.stop()


@pytest.fixture()
async def service(bert_model: Path) -> AsyncIterator[RerankService]:
    settings = Settings(
        model=[str(bert_model)], max_length=64, cache_entries=0, max_chunks_per_doc=4
    )
    service = RerankService(settings)
    await asyncio.to_thread(service.load)
    try:
        yield service
    finally:
        await service.close()


async def test_an_overloaded_request_is_refused_before_it_is_tokenized(
    service: RerankService, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = service.model(None)
    planned: list[int] = []
    real_plan = served.engine.plan

    def recording_plan(*args: object, **kwargs: object) -> object:
        planned.append(1)
        return real_plan(*args, **kwargs)

    def full(tokens: int) -> None:
        raise Overloaded("the queue is full", retry_after=7)

    monkeypatch.setattr(served.engine, "plan", recording_plan)
    monkeypatch.setattr(served.batcher, "admit", full)
    with pytest.raises(Overloaded):
        await service.rerank(RerankRequest("q", ["a document", "another"]))
    assert planned == []
    monkeypatch.undo()
    result = await service.rerank(RerankRequest("q", ["a document", "another"]))
    assert result.tokens > 0


async def test_a_client_cannot_raise_the_servers_chunk_cap(service: RerankService) -> None:
    document = " ".join(f"word{i}" for i in range(3000))
    asked = await service.rerank(
        RerankRequest("q", [document], strategy="chunk", max_chunks_per_doc=1000)
    )
    capped = await service.rerank(
        RerankRequest("q", [document + " x"], strategy="chunk", max_chunks_per_doc=4)
    )
    fewer = await service.rerank(
        RerankRequest("q", [document + " y"], strategy="chunk", max_chunks_per_doc=2)
    )
    assert 0 < asked.tokens <= 4 * 64
    assert asked.tokens == capped.tokens  # 1000 asked, the server's 4 run
    assert fewer.tokens < asked.tokens  # fewer than the cap is honoured


async def test_a_timeout_is_a_504_not_a_503(service: RerankService) -> None:
    assert RequestTimeout("x").status == 504
    normal = service.settings
    service.settings = normal.model_copy(update={"request_timeout": 0.05})
    documents = [f"document {i} " + "words " * 40 for i in range(400)]
    with pytest.raises(RequestTimeout):
        await service.rerank(RerankRequest("q", documents))
    service.settings = normal
    served = service.model(None)
    for _ in range(100):  # the timed-out request's queued sequences are dropped
        if served.batcher.queued == (0, 0):
            break
        await asyncio.sleep(0.05)
    assert served.batcher.queued == (0, 0)
    assert np.isfinite((await service.rerank(RerankRequest("q", ["d"]))).results[0].score)
