"""Giving memory back to the system after large requests.

glibc's malloc keeps freed memory inside the process: a request that tokenized megabytes of
text or decoded a large image leaves the RSS at its peak, in one arena per thread that did
the work. `malloc_trim(0)` returns the free pages of every arena. It costs milliseconds on a
big heap, so it runs off the event loop, only after a request whose body was large, and at
most once per `interval` seconds.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable

LARGE_BODY = 1 << 20  # bytes: smaller requests leave little behind


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        function: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    return function


class Trimmer:
    """Calls `malloc_trim(0)` in a worker thread after large requests, rate-limited."""

    def __init__(self, interval: float = 1.0) -> None:
        self._trim = _load_trim()
        self._interval = interval
        self._last = 0.0
        self._busy = threading.Lock()
        self.trims = 0

    def after_request(self, body_bytes: int) -> None:
        """Schedule a trim if this request was large and none ran in the last `interval`."""
        now = time.monotonic()
        if self._trim is None or body_bytes < LARGE_BODY or now - self._last < self._interval:
            return
        self._last = now
        try:
            asyncio.get_running_loop().run_in_executor(None, self.trim_now)
        except RuntimeError:  # no loop: trim here
            self.trim_now()

    def trim_now(self) -> None:
        if self._trim is None or not self._busy.acquire(blocking=False):
            return
        try:
            self._trim(0)
            self.trims += 1
        finally:
            self._busy.release()
