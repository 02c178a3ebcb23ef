"""One launched model: its state, its replicas, and the leases requests hold on it.

A request leases the handle for as long as it runs. Terminating a handle turns it to
`draining` (new leases are refused), waits until the last lease is returned, and only then
are its batcher stopped and its backends closed, so no request in flight is cut off.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rerankd.batching import DynamicBatcher
from rerankd.calibration.model import Calibration
from rerankd.engine.engine import Engine
from rerankd.engine.tokenize import Sequence
from rerankd.errors import NotReady
from rerankd.registry.spec import Registration


class ModelState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


@dataclass(frozen=True)
class Placement:
    """Where each replica runs, and with how many threads (None: the backend's default)."""

    devices: tuple[str, ...]  # one per replica
    threads: int | None
    backend: str
    dtype: str
    max_length: int | None  # None: the model family's default

    @property
    def cpu_replicas(self) -> int:
        return sum(1 for d in self.devices if d == "cpu")


@dataclass(eq=False)
class ModelHandle:
    uid: str
    registration: Registration
    placement: Placement
    launched_by: str
    desired: bool = False  # launched through the shared desired state (every process runs it)
    state: ModelState = ModelState.LOADING
    error: str | None = None
    load_seconds: float | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    engines: list[Engine] = field(default_factory=list)
    queue: DynamicBatcher[Sequence] | None = None  # set once loaded
    identity: tuple[object, ...] = ()
    calibration: Calibration | None = None  # raw score -> P(relevant), when one is attached
    _leases: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _drained: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = field(
        default_factory=list
    )

    # What the request path reads (the same names `RerankService` always used).
    @property
    def name(self) -> str:
        return self.uid

    @property
    def engine(self) -> Engine:
        return self.engines[0]

    @property
    def batcher(self) -> DynamicBatcher[Sequence]:
        if self.queue is None:
            raise NotReady(f"model {self.uid!r} is not loaded")
        return self.queue

    @property
    def in_flight(self) -> int:
        return self._leases

    # Leases ------------------------------------------------------------------------------

    def try_acquire(self) -> bool:
        """Take a lease if the model is ready; False otherwise (the caller says why)."""
        with self._lock:
            if self.state is not ModelState.READY:
                return False
            self._leases += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._leases -= 1
            waiters = self._drained if self._leases == 0 else []
            if waiters:
                self._drained = []
        for loop, future in waiters:
            loop.call_soon_threadsafe(_finish, future)

    @contextmanager
    def leased(self) -> Iterator[ModelHandle]:
        try:
            yield self
        finally:
            self.release()

    async def wait_drained(self, timeout: float) -> bool:
        """After the state left `ready`: wait for the last lease; False on timeout."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._leases == 0:
                return True
            self._drained.append((loop, future))
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False

    # Reading -----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        reg = self.registration
        described: dict[str, Any] = {
            "id": self.uid,
            "model_uid": self.uid,
            "model_name": reg.model_name,
            "model_type": "rerank",
            "state": self.state.value,
            "error": self.error,
            "replica": len(self.placement.devices),
            "replicas": len(self.placement.devices),
            "devices": list(self.placement.devices),
            "accelerators": [d for d in self.placement.devices if d != "cpu"],
            "threads_per_replica": self.placement.threads,
            "backend": self.placement.backend,
            "dtype": self.placement.dtype,
            "language": reg.language,
            "model_lang": reg.language,
            "load_seconds": None if self.load_seconds is None else round(self.load_seconds, 3),
            "created": self.created,
            "in_flight": self.in_flight,
            "launched_by": self.launched_by,
            "desired": "launched" if self.desired else "local",
        }
        if self.engines:
            described.update(
                {
                    "backend": self.engine.options.backend,  # what "auto" chose
                    "backend_choice": dataclasses.asdict(self.engine.choice),
                    "source": self.engine.model.source,
                    "revision": self.engine.model.revision,
                    "family": self.engine.model.family,
                    "max_length": self.engine.max_length,
                    "served_dtype": self.engine.served_dtype,  # a refused int8/bf16: float32
                    "max_batch_tokens": self.queue.max_batch_tokens if self.queue else None,
                    "batches_in_flight": (
                        self.queue.workers // len(self.engines) if self.queue else None
                    ),
                    "calibration": self.calibration.describe() if self.calibration else None,
                }
            )
        else:
            described.update({"source": reg.source, "revision": None, "max_length": None})
        return described


def _finish(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
