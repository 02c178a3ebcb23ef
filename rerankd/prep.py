"""Tokenization (request planning) on a pool of its own, most urgent first.

Planning a request (cutting, tokenizing, chunking its documents) is CPU work that grows with
its characters. On the shared default executor a small request's planning queued behind
every giant one in arrival order, so it could wait seconds before reaching the scheduler that
would have run it first. Here jobs wait in one queue ordered like the scheduler's:
(priority, characters, arrival). The pool has one worker per core (at least two), and one of
them, the *express* worker, only takes jobs of at most `express_chars`: however many large
requests are being planned, a small one starts at once.

The fast tokenizer parallelises `encode_batch` on one process-wide Rust (rayon) pool unless
told not to; a small request's encoding then queued behind a giant one's inside that pool,
whatever thread asked (measured: 0.1-0.5 s of a small request's planning under 8 giant
clients). A server therefore turns that parallelism off (`own_the_tokenizer_threads`): each
planning job runs on its worker's one core, and this pool is all the parallelism there is.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

EXPRESS_CHARS = 64 * 1024  # a request this small is planned in milliseconds


@dataclass(order=True)
class _Task:
    key: tuple[int, int, int]  # (priority, characters, arrival)
    work: Callable[[], Any] = field(compare=False)
    future: asyncio.Future[Any] = field(compare=False)
    loop: asyncio.AbstractEventLoop = field(compare=False)


TOKENIZERS_PARALLELISM = "TOKENIZERS_PARALLELISM"


def own_the_tokenizer_threads() -> None:
    """Turn the fast tokenizer's own thread pool off for this process (see the module
    docstring), unless the operator set `TOKENIZERS_PARALLELISM` explicitly. Call it before
    any tokenizer runs: the variable is read on each call, and set once here."""
    os.environ.setdefault(TOKENIZERS_PARALLELISM, "false")


def default_workers() -> int:
    """One worker per core this process may use, at least two (the express one and one)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(2, cores)


class PrepPool:
    """Runs planning jobs on its own threads, smallest (then earliest) first."""

    def __init__(
        self, workers: int | None = None, express_chars: int = EXPRESS_CHARS, name: str = "prep"
    ) -> None:
        self.workers = max(2, workers or default_workers())
        self.express_chars = express_chars
        self._name = name
        self._queue: list[_Task] = []
        self._queued_chars = 0
        self._arrivals = 0
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._running = True

    @property
    def queued_chars(self) -> int:
        """Characters waiting to be planned (not counting jobs already running)."""
        with self._cond:
            return self._queued_chars

    async def run(self, work: Callable[[], T], chars: int, priority: int = 0) -> T:
        """`work()` on the pool, ordered by (priority, chars, arrival); a cancelled caller's
        job is dropped if it has not started."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._cond:
            if not self._running:
                raise RuntimeError("the planning pool is stopped")
            self._start_threads()
            self._arrivals += 1
            heapq.heappush(
                self._queue, _Task((priority, chars, self._arrivals), work, future, loop)
            )
            self._queued_chars += chars
            self._cond.notify_all()
        return await future

    def stop(self) -> None:
        """Stop the workers after their current job; queued jobs are cancelled."""
        with self._cond:
            self._running = False
            dropped, self._queue = self._queue, []
            self._queued_chars = 0
            self._cond.notify_all()
        for task in dropped:
            task.loop.call_soon_threadsafe(task.future.cancel)
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()

    def _start_threads(self) -> None:
        if self._threads:
            return
        for index in range(self.workers):
            limit = self.express_chars if index == 0 else None
            thread = threading.Thread(
                target=self._work, args=(limit,), name=f"rerankd-{self._name}-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _next(self, limit: int | None) -> _Task | None:
        """The most urgent job this worker may take, or None when stopping."""
        with self._cond:
            while True:
                if not self._running:
                    return None
                if self._queue and (limit is None or self._queue[0].key[1] <= limit):
                    task = heapq.heappop(self._queue)
                    self._queued_chars -= task.key[1]
                    if not task.future.cancelled():
                        return task
                    continue
                self._cond.wait()

    def _work(self, limit: int | None) -> None:
        while (task := self._next(limit)) is not None:
            try:
                result = task.work()
            except BaseException as exc:  # noqa: BLE001 - the caller gets it, the worker goes on
                task.loop.call_soon_threadsafe(_reject, task.future, exc)
            else:
                task.loop.call_soon_threadsafe(_resolve, task.future, result)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
