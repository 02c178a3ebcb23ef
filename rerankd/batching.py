"""Dynamic batching across concurrent requests, under a token budget.

Every request's sequences join one queue. An inference thread per model replica takes what is
waiting, sorts it by length and cuts batches whose padded size (longest x count) stays within
`max_batch_tokens`, so short and long documents from different requests are never padded to
each other. The queue is bounded in tokens: past the bound a request is refused at once
(`Overloaded`) rather than left to wait. Nothing here knows about HTTP or torch: a replica is
just a function from a list of sequences to one output row per sequence.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import numpy as np

from rerankd.admission import DrainRate
from rerankd.errors import BackendFailed, NotReady, Overloaded

logger = logging.getLogger(__name__)


class Sized(Protocol):
    def __len__(self) -> int: ...


Item = TypeVar("Item", bound=Sized)
# A replica: one batch of items in, one output row per item out.
Runner = Callable[[list[Item]], np.ndarray]


def cut_batches(lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int) -> list[range]:
    """Split items already sorted by ascending length into consecutive batches.

    A batch grows while its padded size (its longest item times its count) stays within the
    budget; an item longer than the budget still gets a batch of its own.
    """
    batches: list[range] = []
    start = 0
    for end in range(1, len(lengths) + 1):
        count = end - start
        if count > 1 and (lengths[end - 1] * count > max_batch_tokens or count > max_batch_size):
            batches.append(range(start, end - 1))
            start = end - 1
    if start < len(lengths):
        batches.append(range(start, len(lengths)))
    return batches


def run_sorted(
    runner: Runner[Item], items: Sequence[Item], max_batch_tokens: int, max_batch_size: int = 256
) -> np.ndarray:
    """Run `items` in length-sorted batches cut by `cut_batches`, in one call, no queue.

    Outputs come back in the caller's order. The in-process `Reranker` and the benchmarks'
    engine-alone baseline use it; the server goes through `DynamicBatcher` instead.
    """
    order = sorted(range(len(items)), key=lambda i: len(items[i]))
    lengths = [len(items[i]) for i in order]
    outputs: np.ndarray | None = None
    for batch in cut_batches(lengths, max_batch_tokens, max_batch_size):
        rows = [order[i] for i in batch]
        result = runner([items[r] for r in rows])
        if outputs is None:
            outputs = np.empty((len(items), *result.shape[1:]), dtype=result.dtype)
        outputs[rows] = result
    return outputs if outputs is not None else np.empty((0,), dtype=np.float32)


class BatchObserver(Protocol):
    """Receives what the batcher does, for metrics; every method must be cheap."""

    def queue_changed(self, pairs: int, tokens: int) -> None: ...

    def batch_done(
        self, pairs: int, requests: int, padded_tokens: int, real_tokens: int, seconds: float
    ) -> None: ...

    def rejected(self, reason: str) -> None: ...

    def queue_wait(self, seconds: float) -> None: ...


@dataclass(eq=False)
class _Job(Generic[Item]):
    """One request's sequences and the future its caller awaits."""

    items: Sequence[Item]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[np.ndarray]
    tokens: int
    outputs: np.ndarray | None = None
    remaining: int = 0
    cancelled: bool = False
    failed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    queued_at: float = field(default_factory=time.perf_counter)
    started: bool = False  # its first batch has begun (the queue wait is over)

    def deliver(self, rows: list[int], values: np.ndarray) -> None:
        with self.lock:
            if self.failed or self.cancelled:
                return
            if self.outputs is None:
                self.outputs = np.empty((len(self.items), *values.shape[1:]), dtype=values.dtype)
            self.outputs[rows] = values
            self.remaining -= len(rows)
            if self.remaining == 0:
                self.loop.call_soon_threadsafe(_resolve, self.future, self.outputs)

    def fail(self, error: BaseException) -> None:
        with self.lock:
            if self.failed or self.cancelled:
                return
            self.failed = True
        self.loop.call_soon_threadsafe(_reject, self.future, error)


def _resolve(future: asyncio.Future[np.ndarray], value: np.ndarray) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future[np.ndarray], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


@dataclass(frozen=True)
class _Entry(Generic[Item]):
    job: _Job[Item]
    row: int
    length: int


class DynamicBatcher(Generic[Item]):
    """One queue for a model, drained by one inference thread per replica."""

    def __init__(
        self,
        replicas: list[Runner[Item]],
        *,
        max_batch_tokens: int = 16384,
        max_batch_size: int = 256,
        max_queue_tokens: int = 1_000_000,
        max_queue_seconds: float | None = None,
        max_wait_ms: float = 2.0,
        observer: BatchObserver | None = None,
        name: str = "model",
    ) -> None:
        if not replicas:
            raise ValueError("a batcher needs at least one replica")
        self._replicas = replicas
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_queue_tokens = max_queue_tokens
        self.max_queue_seconds = max_queue_seconds
        self._max_wait = max_wait_ms / 1000.0
        self._observer = observer
        self._name = name
        self._pending: list[_Entry[Item]] = []
        self._queued_tokens = 0
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._running = False
        self._drain = DrainRate(replicas=len(replicas))

    @property
    def queued(self) -> tuple[int, int]:
        """(pairs, tokens) waiting."""
        with self._cond:
            return len(self._pending), self._queued_tokens

    def start(self) -> None:
        self._running = True
        for index, runner in enumerate(self._replicas):
            thread = threading.Thread(
                target=self._work, args=(runner,), name=f"rerankd-{self._name}-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the threads after the batches in progress; queued work fails with NotReady."""
        with self._cond:
            self._running = False
            dropped, self._pending, self._queued_tokens = self._pending, [], 0
            self._cond.notify_all()
        for job in {entry.job for entry in dropped}:
            job.fail(NotReady("the server is shutting down"))
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()

    def admit(self, tokens: int) -> None:
        """Refuse now (`Overloaded`) if `tokens` more would not fit: a cheap check before the
        caller spends time tokenizing; `submit` checks the exact count again."""
        with self._cond:
            self._check_room(tokens)

    def _room(self) -> int:
        """Tokens the queue may hold: its bound, or fewer when the replicas' recent speed says
        the last of them would wait past `max_queue_seconds` (it would only time out)."""
        rate = self._drain.per_second() if self.max_queue_seconds is not None else None
        if rate is None or self.max_queue_seconds is None:
            return self.max_queue_tokens
        return min(self.max_queue_tokens, int(rate * self.max_queue_seconds))

    def _check_room(self, tokens: int) -> None:
        # An empty queue takes any one request, however large: it can only wait for itself.
        room = self._room()
        if self._pending and self._queued_tokens + tokens > room:
            if self._observer:
                self._observer.rejected("overloaded")
            excess = self._queued_tokens + tokens - room
            why = "" if room == self.max_queue_tokens else " (what drains before the timeout)"
            raise Overloaded(
                f"the queue holds {self._queued_tokens} tokens; this request's {tokens} "
                f"would pass the limit of {room}{why}. Retry shortly.",
                retry_after=self._drain.retry_after(excess),
            )

    async def submit(self, items: Sequence[Item]) -> np.ndarray:
        """Queue a request's sequences; returns one output row per item, in order."""
        if not items:
            return np.empty((0,), dtype=np.float32)
        loop = asyncio.get_running_loop()
        lengths = [len(item) for item in items]
        job = _Job(items, loop, loop.create_future(), tokens=sum(lengths), remaining=len(items))
        with self._cond:
            if not self._running:
                raise NotReady("the batcher is not running")
            self._check_room(job.tokens)
            self._pending.extend(_Entry(job, row, n) for row, n in enumerate(lengths))
            self._queued_tokens += job.tokens
            self._report_queue()
            self._cond.notify()
        try:
            result: np.ndarray = await job.future
            return result
        except asyncio.CancelledError:
            self._cancel(job)
            raise

    def _cancel(self, job: _Job[Item]) -> None:
        """Drop a cancelled request's queued sequences (a client gone, or a timeout)."""
        with job.lock:
            job.cancelled = True
        with self._cond:
            kept = [entry for entry in self._pending if entry.job is not job]
            self._queued_tokens -= sum(e.length for e in self._pending if e.job is job)
            self._pending = kept
            self._report_queue()

    def _report_queue(self) -> None:
        if self._observer:
            self._observer.queue_changed(len(self._pending), self._queued_tokens)

    def _take(self, was_idle: bool) -> list[_Entry[Item]] | None:
        """Wait for work and take it; None when stopping."""
        with self._cond:
            while self._running and not self._pending:
                self._cond.wait()
                was_idle = True
            if not self._running:
                return None
            if not was_idle and self._queued_tokens < self.max_batch_tokens and self._max_wait:
                # Coming off a busy round with little waiting: a moment lets a burst join.
                self._cond.wait(self._max_wait)
            limit = self._take_limit()
            taken: list[_Entry[Item]] = []
            tokens = 0
            for entry in self._pending:
                if tokens >= limit:
                    break
                taken.append(entry)
                tokens += entry.length
            self._pending = self._pending[len(taken) :]
            self._queued_tokens -= tokens
            self._report_queue()
            return taken

    def _take_limit(self) -> float:
        # One replica takes everything; several share the queue a few batches at a time.
        return float("inf") if len(self._replicas) == 1 else 4 * self.max_batch_tokens

    def _work(self, runner: Runner[Item]) -> None:
        was_idle = True
        while (taken := self._take(was_idle)) is not None:
            entries = sorted((e for e in taken if not e.job.cancelled), key=lambda e: e.length)
            lengths = [e.length for e in entries]
            for batch in cut_batches(lengths, self.max_batch_tokens, self.max_batch_size):
                self._run_batch(runner, [entries[i] for i in batch])
            was_idle = False

    def _run_batch(self, runner: Runner[Item], entries: list[_Entry[Item]]) -> None:
        entries = [e for e in entries if not e.job.cancelled]
        if not entries:
            return
        started = time.perf_counter()
        for job in {e.job for e in entries if not e.job.started}:
            job.started = True
            if self._observer:
                self._observer.queue_wait(started - job.queued_at)
        try:
            outputs = runner([e.job.items[e.row] for e in entries])
        except Exception as exc:  # noqa: BLE001 - one batch's failure must not stop the thread
            logger.exception("backend failed on a batch of %d sequences", len(entries))
            error = BackendFailed("the model backend failed on this request's batch")
            error.__cause__ = exc
            for job in {e.job for e in entries}:
                job.fail(error)
            return
        elapsed = time.perf_counter() - started
        self._drain.add(sum(e.length for e in entries), elapsed)
        by_job: dict[_Job[Item], list[int]] = {}
        for position, entry in enumerate(entries):
            by_job.setdefault(entry.job, []).append(position)
        for job, positions in by_job.items():
            job.deliver([entries[p].row for p in positions], outputs[positions])
        if self._observer:
            longest = entries[-1].length
            real = sum(e.length for e in entries)
            self._observer.batch_done(
                len(entries), len(by_job), longest * len(entries), real, elapsed
            )
