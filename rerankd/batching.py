"""Dynamic batching across concurrent requests, under a token budget, with a latency promise.

Every request's sequences join one queue per model; an inference thread per replica cuts one
batch at a time from what is waiting, so a request that arrives while a batch runs is
considered for the very next one. A replica listed twice gets two threads, two batches in
flight (the GPU default, `--batches-in-flight`): one is prepared while the other runs. The scheduler's promise, in one sentence:

    A request's first batch starts right after the batch that was running when it arrived,
    unless a waiting request with a better (lower) `priority`, or the same priority and fewer
    tokens left to run, goes first.

Each batch is built around the *head* request, the waiting one that sorts first by
(priority, tokens left, arrival): it starts at the head's shortest waiting sequence and adds
sequences of the head's priority in ascending length class, the head's own first within a
class, none longer than the head's longest, while the padded size (longest x count) stays
within `max_batch_tokens` (`select_batch`) and, while interactive traffic is about, its running
time as the measured per-token cost predicts it stays within `max_batch_ms`: a small request
that arrives while a bulk batch runs waits at most about that long for it (tokens alone do
not bound time: long sequences and a busy CPU make a batch slower). So a short request is
never padded to a bulk one
(its batch is small and quick), requests with rows of similar length share batches, and
requests of one size are served in arrival order rather than interleaved. Ordering
by tokens left (shortest remaining first) is what keeps interactive requests ahead of bulk
ones without a flag; `priority` (vLLM's meaning: lower runs earlier, default 0) overrides
size. The queue is bounded in tokens: past the bound a request is refused at once
(`Overloaded`) rather than left to wait. Nothing here knows about HTTP or torch: a replica is
just a function from a list of sequences to one output row per sequence.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import numpy as np

from rerankd.admission import DrainRate
from rerankd.errors import BackendFailed, NotReady, Overloaded
from rerankd.prep import PrepPool

logger = logging.getLogger(__name__)


class Sized(Protocol):
    def __len__(self) -> int: ...


Item = TypeVar("Item", bound=Sized)
T = TypeVar("T")
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

    def queue_wait(self, seconds: float) -> None:
        """A request's first batch is starting, `seconds` after it was queued."""


@dataclass(eq=False)
class _Job(Generic[Item]):
    """One request's sequences, the rows not yet run, and the future its caller awaits."""

    items: Sequence[Item]
    lengths: list[int]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[np.ndarray]
    priority: int
    arrival: int  # a counter: ties in size go in arrival order
    queued_at: float
    pending: list[int] = field(default_factory=list)  # rows not yet run, ascending by length
    pending_tokens: int = 0
    started: bool = False
    outputs: np.ndarray | None = None
    remaining: int = 0  # rows not yet delivered
    cancelled: bool = False
    failed: bool = False
    interactive: bool = False  # small enough for one batch: a user waits on it
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.pending = sorted(range(len(self.items)), key=self.lengths.__getitem__)
        self.pending_tokens = sum(self.lengths)
        self.remaining = len(self.items)

    def rank(self) -> tuple[int, int, int]:
        """Who goes first: better priority, then fewer tokens left, then earlier arrival."""
        return (self.priority, self.pending_tokens, self.arrival)

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


class CostModel(Protocol):
    """Predicts a batch's running time; the scheduler cuts batches to a time budget with it."""

    def seconds(self, count: int, padded_length: int) -> float | None:
        """Predicted seconds for `count` sequences padded to `padded_length`; None: unknown."""

    def observe(self, count: int, padded_length: int, seconds: float) -> None:
        """One batch of that shape ran in `seconds`."""


class MeasuredCost:
    """Seconds per padded token, a moving average of the batches run (exponential, so the
    estimate follows a CPU that other work slows down or frees)."""

    def __init__(self, weight: float = 0.2) -> None:
        self._weight = weight
        self._per_token: float | None = None
        self._lock = threading.Lock()

    def seconds(self, count: int, padded_length: int) -> float | None:
        per_token = self._per_token
        return None if per_token is None else per_token * count * padded_length

    def observe(self, count: int, padded_length: int, seconds: float) -> None:
        tokens = count * padded_length
        if tokens <= 0 or seconds <= 0:
            return
        sample = seconds / tokens
        with self._lock:
            old = self._per_token
            self._per_token = sample if old is None else old + self._weight * (sample - old)


# The time budget of a bulk batch while interactive work is about: at most `max_batch_ms`, and
# at most this factor times the last interactive request's predicted run, but never under the
# floor (below it a batch's fixed cost dominates and bulk throughput collapses).
INTERACTIVE_WAIT_FACTOR = 2.0
MIN_BATCH_SECONDS = 0.010


@dataclass(frozen=True)
class TimeBudget:
    """A batch may run `seconds` at most as `cost` predicts it (at least one sequence runs)."""

    seconds: float
    cost: CostModel

    def allows(self, count: int, padded_length: int) -> bool:
        predicted = self.cost.seconds(count, padded_length)
        return predicted is None or predicted <= self.seconds


def select_batch(
    jobs: Sequence[_Job[Item]],
    max_batch_tokens: int,
    max_batch_size: int,
    budget: TimeBudget | None = None,
) -> list[_Entry[Item]]:
    """The next batch, built around the head job as the module docstring says.

    Candidates are the waiting sequences of requests at the head's priority, no shorter than
    the head's shortest and no longer than its longest. They are ordered by length class
    (lengths within `SIMILAR` of each other are one class), then by their request's rank, so
    the head's rows go first among rows of about its length, and the batch is the longest
    prefix within the padded-token budget: it always holds the head's shortest sequence, pads
    little, and two bulk requests of one size run one after the other, not interleaved.
    With `budget`, the batch also stops growing where its predicted time would pass it.
    """
    ranked = sorted(jobs, key=_Job.rank)
    head = ranked[0]
    shortest = head.lengths[head.pending[0]]
    longest = head.lengths[head.pending[-1]]
    pool: list[tuple[int, int, int, int]] = []
    for position, job in enumerate(ranked):
        if job.priority != head.priority:
            break  # ranked by priority first: the rest are all less urgent
        for row in job.pending:  # ascending, so the first one too long ends this job's rows
            length = job.lengths[row]
            if length > longest:
                break
            if length >= shortest:
                pool.append((_length_class(length), position, length, row))
    pool.sort()
    taken, padded_to = 1, pool[0][2]  # the head's shortest sequence sorts first
    while taken < min(len(pool), max_batch_size):
        grown = max(padded_to, pool[taken][2])
        if grown * (taken + 1) > max_batch_tokens:
            break
        if budget is not None and not budget.allows(taken + 1, grown):
            break
        taken, padded_to = taken + 1, grown
    batch = [_Entry(ranked[position], row, length) for _, position, length, row in pool[:taken]]
    batch.sort(key=lambda entry: entry.length)
    return batch


SIMILAR = 1.1  # lengths within 10% of each other pad each other little: one length class
_LOG_SIMILAR = math.log(SIMILAR)


def _length_class(length: int) -> int:
    return int(math.log(max(length, 1)) / _LOG_SIMILAR)


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
        max_batch_ms: float | None = None,
        cost: CostModel | None = None,
        interactive_window: float = 5.0,
        observer: BatchObserver | None = None,
        name: str = "model",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`max_batch_ms`: while an interactive request (one that fits in one batch) arrived
        in the last `interactive_window` seconds, other requests' batches are cut so that
        `cost` (default: measured here) predicts at most this long for each."""
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
        self._jobs: list[_Job[Item]] = []  # requests with sequences not yet taken
        self._arrivals = 0
        self._queued_pairs = 0
        self._queued_tokens = 0
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._running = False
        self._drain = DrainRate(replicas=len(replicas))
        self.cost: CostModel = cost or MeasuredCost()
        self._max_batch_seconds = None if max_batch_ms is None else max_batch_ms / 1000.0
        self._interactive_window = interactive_window
        self._interactive_at: float | None = None  # when the last interactive request came
        self._interactive_seconds: float | None = None  # its predicted running time
        self._clock = clock
        self._reserved = 0  # tokens of admitted requests still being planned
        self.prep = PrepPool(name=f"{name}-prep")

    @property
    def queued(self) -> tuple[int, int]:
        """(pairs, tokens) waiting."""
        with self._cond:
            return self._queued_pairs, self._queued_tokens

    @property
    def workers(self) -> int:
        """Inference threads: one per replica and batch in flight."""
        return len(self._replicas)

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
            dropped, self._jobs = self._jobs, []
            self._queued_pairs = self._queued_tokens = 0
            self._cond.notify_all()
        for job in dropped:
            job.fail(NotReady("the server is shutting down"))
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()
        self.prep.stop()

    async def prepare(self, work: Callable[[], T], tokens: int, chars: int, priority: int = 0) -> T:
        """Plan a request on the batcher's own pool (`PrepPool`), its estimated `tokens`
        counted in the queue meanwhile: requests being tokenized at once are admitted
        against each other, not each against a queue that none of them has reached yet."""
        with self._cond:
            self._check_room(tokens)
            self._reserved += tokens
        try:
            return await self.prep.run(work, chars, priority)
        finally:
            with self._cond:
                self._reserved -= tokens

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
        held = self._queued_tokens + self._reserved
        if held and held + tokens > room:
            if self._observer:
                self._observer.rejected("overloaded")
            excess = held + tokens - room
            why = "" if room == self.max_queue_tokens else " (what drains before the timeout)"
            raise Overloaded(
                f"the queue holds {held} tokens; this request's {tokens} "
                f"would pass the limit of {room}{why}. Retry shortly.",
                retry_after=self._drain.retry_after(excess),
            )

    async def submit(self, items: Sequence[Item], priority: int = 0) -> np.ndarray:
        """Queue a request's sequences; returns one output row per item, in order.

        `priority`: lower runs earlier (vLLM's convention); requests of equal priority are
        ordered by the tokens they have left to run, then by arrival.
        """
        if not items:
            return np.empty((0,), dtype=np.float32)
        loop = asyncio.get_running_loop()
        lengths = [len(item) for item in items]
        with self._cond:
            if not self._running:
                raise NotReady("the batcher is not running")
            tokens = sum(lengths)
            self._check_room(tokens)
            self._arrivals += 1
            job = _Job(
                items,
                lengths,
                loop,
                loop.create_future(),
                priority=priority,
                arrival=self._arrivals,
                queued_at=time.perf_counter(),
                interactive=tokens <= self.max_batch_tokens,
            )
            if job.interactive:
                self._interactive_at = self._clock()
                self._interactive_seconds = self.cost.seconds(len(lengths), max(lengths, default=0))
            self._jobs.append(job)
            self._queued_pairs += len(items)
            self._queued_tokens += tokens
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
        self._forget(job)

    def _forget(self, job: _Job[Item]) -> None:
        """Take a job's sequences not yet run out of the queue."""
        with self._cond:
            if job in self._jobs:
                self._jobs.remove(job)
                self._queued_pairs -= len(job.pending)
                self._queued_tokens -= job.pending_tokens
                self._report_queue()

    def _report_queue(self) -> None:
        if self._observer:
            self._observer.queue_changed(self._queued_pairs, self._queued_tokens)

    def _take(self, was_idle: bool) -> list[_Entry[Item]] | None:
        """Wait for work and take the next batch; None when stopping."""
        with self._cond:
            while True:
                while self._running and not self._jobs:
                    self._cond.wait()
                    was_idle = True
                if not self._running:
                    return None
                if was_idle or self._queued_tokens >= self.max_batch_tokens or not self._max_wait:
                    break
                # Coming off a busy batch with little waiting: a moment lets a burst join.
                self._cond.wait(self._max_wait)
                was_idle = True  # waited once; take what is there now
            batch = select_batch(
                self._jobs, self.max_batch_tokens, self.max_batch_size, self._budget()
            )
            self._remove(batch)
            return batch

    def _budget(self) -> TimeBudget | None:
        """The time budget of the next batch (called with the lock held): set while
        interactive requests are about and the head is not one of them (an interactive head
        runs whole: cutting it would only delay its own answer)."""
        if self._max_batch_seconds is None or self._interactive_at is None:
            return None
        if self._clock() - self._interactive_at > self._interactive_window:
            return None
        if min(self._jobs, key=_Job.rank).interactive:
            return None
        seconds = self._max_batch_seconds
        if self._interactive_seconds is not None:
            # A small request waits for at most one running batch: as long as twice its own
            # run keeps it within 3x its time alone, however fast the model is.
            wait = max(MIN_BATCH_SECONDS, INTERACTIVE_WAIT_FACTOR * self._interactive_seconds)
            seconds = min(seconds, wait)
        return TimeBudget(seconds, self.cost)

    def _remove(self, batch: list[_Entry[Item]]) -> None:
        """Take a batch's rows out of their jobs (called with the lock held)."""
        now = time.perf_counter()
        rows: dict[_Job[Item], set[int]] = {}
        for entry in batch:
            rows.setdefault(entry.job, set()).add(entry.row)
        for job, taken in rows.items():
            job.pending = [row for row in job.pending if row not in taken]
            job.pending_tokens -= sum(job.lengths[row] for row in taken)
            if not job.started:
                job.started = True
                if self._observer:
                    self._observer.queue_wait(now - job.queued_at)
            if not job.pending:
                self._jobs.remove(job)
        self._queued_pairs -= len(batch)
        self._queued_tokens -= sum(entry.length for entry in batch)
        self._report_queue()

    def _work(self, runner: Runner[Item]) -> None:
        was_idle = True
        while (batch := self._take(was_idle)) is not None:
            self._run_batch(runner, batch)
            was_idle = False

    def _run_batch(self, runner: Runner[Item], entries: list[_Entry[Item]]) -> None:
        entries = [e for e in entries if not e.job.cancelled]
        if not entries:
            return
        started = time.perf_counter()
        try:
            outputs = runner([e.job.items[e.row] for e in entries])
        except Exception as exc:  # noqa: BLE001 - one batch's failure must not stop the thread
            logger.exception("backend failed on a batch of %d sequences", len(entries))
            error = BackendFailed("the model backend failed on this request's batch")
            error.__cause__ = exc
            for job in {e.job for e in entries}:
                job.fail(error)
                self._forget(job)  # its other sequences would be run for nobody
            return
        elapsed = time.perf_counter() - started
        self._drain.add(sum(e.length for e in entries), elapsed)
        self.cost.observe(len(entries), entries[-1].length, elapsed)
        by_job: dict[_Job[Item], list[int]] = {}
        for position, entry in enumerate(entries):
            by_job.setdefault(entry.job, []).append(position)
        if self._observer:  # before delivering: a response never runs ahead of its metrics
            longest = entries[-1].length
            real = sum(e.length for e in entries)
            self._observer.batch_done(
                len(entries), len(by_job), longest * len(entries), real, elapsed
            )
        for job, positions in by_job.items():
            job.deliver([entries[p].row for p in positions], outputs[positions])
