"""Loading a launched model's replicas, and giving their memory back when it ends."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import gc
import logging
import queue
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence as Items
from concurrent.futures import Executor, Future
from typing import ParamSpec, TypeVar

from rerankd.batching import BatchObserver, DynamicBatcher
from rerankd.calibration.attach import find as find_calibration
from rerankd.calibration.model import Calibration
from rerankd.config import Settings
from rerankd.engine import EngineOptions
from rerankd.engine.engine import Engine, load_engine
from rerankd.engine.identity import cache_identity
from rerankd.engine.options import default_batches_in_flight
from rerankd.engine.tokenize import Sequence
from rerankd.families import resolve
from rerankd.registry.handle import ModelHandle, Placement

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class LoaderThread(Executor):
    """One daemon thread that runs loads in order.

    A daemon, unlike ThreadPoolExecutor's workers (which the interpreter joins at exit): a load
    abandoned past `--model-load-timeout` (stuck on a FIFO or a hung mount) must not keep the
    process from exiting on SIGTERM until the kubelet's SIGKILL.
    """

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[tuple[Future[object], Callable[[], object]] | None] = (
            queue.SimpleQueue()
        )
        self._closed = False
        threading.Thread(target=self._serve, name="rerankd-loader", daemon=True).start()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        if self._closed:
            raise RuntimeError("the loader is shut down")
        future: Future[T] = Future()
        self._work.put((future, functools.partial(fn, *args, **kwargs)))  # type: ignore[arg-type]
        return future

    def _serve(self) -> None:
        while (item := self._work.get()) is not None:
            future, call = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:  # handed to whoever awaits the load
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop after the queued loads (or cancel them); never waits for a stuck one."""
        self._closed = True
        if cancel_futures:
            with_pending = []
            while True:
                try:
                    with_pending.append(self._work.get_nowait())
                except queue.Empty:
                    break
            for item in with_pending:
                if item is not None:
                    item[0].cancel()
        self._work.put(None)


def replica_options(settings: Settings, placement: Placement, device: str) -> EngineOptions:
    """EngineOptions for one replica: the launch's overrides, the registration's, the server's.

    The family and the default instruction travel with the registration's `ModelSpec`.
    """
    return dataclasses.replace(
        settings.engine_options(device),
        backend=placement.backend,  # type: ignore[arg-type]
        dtype=placement.dtype,  # type: ignore[arg-type]
        threads=placement.threads if device == "cpu" else None,
        max_length=placement.max_length,
    )


def load_replicas(
    handle: ModelHandle,
    settings: Settings,
    observer: BatchObserver,
    calibrations: Items[Calibration] = (),
) -> tuple[list[Engine], DynamicBatcher[Sequence], tuple[object, ...], Calibration | None]:
    """Resolve once, find the calibration (refused before any weights load when it does not
    fit), load one engine per replica, and build (not start) their batcher."""
    registration, placement = handle.registration, handle.placement
    resolved = resolve(registration.model_spec)
    calibration = find_calibration(resolved, registration.calibration, calibrations)
    engines: list[Engine] = []
    try:
        for device in placement.devices:
            engines.append(load_engine(resolved, replica_options(settings, placement, device)))
    except BaseException:
        close_engines(engines)
        raise
    # Per backend and precision (torch, ONNX and bf16 each run fastest at their own size).
    batch_tokens = settings.max_batch_tokens or engines[0].batch_tokens
    in_flight = settings.batches_in_flight or default_batches_in_flight(placement.devices[0])
    batcher = DynamicBatcher(
        [engine.run for engine in engines for _ in range(in_flight)],  # a worker per batch
        max_batch_tokens=batch_tokens,
        max_batch_size=settings.max_batch_size,
        max_queue_tokens=settings.max_queue_tokens,
        # Half the deadline for the wait, as for every model (see RerankService).
        max_queue_seconds=settings.request_timeout / 2,
        max_wait_ms=settings.batch_wait_ms,
        max_batch_ms=settings.max_batch_ms or None,
        observer=observer,
        name=handle.uid,
    )
    return engines, batcher, cache_identity(engines[0]), calibration


def close_engines(engines: list[Engine]) -> None:
    """Close each backend that can be closed, then drop every reference the list holds."""
    for engine in engines:
        close = getattr(engine.backend, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # noqa: BLE001 - closing must go on for the others
                logger.exception("closing a backend of %s failed", engine.model.name)
    engines.clear()


def settle_heap() -> None:
    """After a load: collect the load's garbage, then freeze what is left out of the collector.

    A loaded server holds some 450k long-lived objects (torch, transformers, the model), and
    every full collection walks them all: 0.22 s with the GIL held on a 2-core Xeon, a pause
    in every request in flight, and again at exit (1.4 s of interpreter shutdown, 0.2 s
    frozen). Frozen objects are still freed by reference counting; `give_memory_back` thaws
    them so that the cycles of a terminated model are collected too.
    """
    gc.collect()
    gc.freeze()


def give_memory_back() -> float:
    """Collect what the closed model left, and ask the C allocator to return freed pages.

    Without `malloc_trim`, glibc keeps a terminated model's freed heap in the process, and
    its RSS never comes back down. Returns the seconds spent.
    """
    started = time.perf_counter()
    gc.unfreeze()  # a closed model's reference cycles are among the frozen objects
    settle_heap()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is needed to load a model at all
        pass
    _malloc_trim()
    return time.perf_counter() - started


def _malloc_trim() -> None:
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        return
