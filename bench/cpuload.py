"""How much of the machine something else used while we measured.

The benchmark machine may be shared (tests, builds). A figure taken while other processes
ate a core is not comparable to one taken on an idle machine, so every measurement records
the CPU that processes outside the measured ones used, as "foreign cores" on average.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

_TICK = os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    """CPU-seconds all processes on the machine have spent busy since boot."""
    with open("/proc/stat") as handle:
        fields = handle.readline().split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq) / _TICK


def _tree_seconds(pids: Iterable[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                times = process.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


@dataclass
class LoadWindow:
    """Call `start()`, run the measurement, call `stop()`; read `foreign_cores`."""

    pids: tuple[int, ...] = ()
    foreign_cores: float = 0.0
    own_cores: float = 0.0
    _wall: float = 0.0
    _busy: float = 0.0
    _own: float = 0.0

    def start(self) -> LoadWindow:
        self._wall, self._busy, self._own = time.monotonic(), _busy_seconds(), self._measured()
        return self

    def stop(self) -> LoadWindow:
        wall = max(time.monotonic() - self._wall, 1e-9)
        own = self._measured() - self._own
        busy = _busy_seconds() - self._busy
        self.own_cores = own / wall
        self.foreign_cores = max(0.0, (busy - own) / wall)
        return self

    def _measured(self) -> float:
        return _tree_seconds(self.pids or (os.getpid(),))


def wait_for_quiet(max_wait: float, threshold: float = 0.3, probe: float = 2.0) -> float:
    """Wait (at most `max_wait` s) until other processes use under `threshold` cores.

    Returns the foreign load seen last, so a report can say it did not get a quiet machine.
    """
    deadline = time.monotonic() + max_wait
    while True:
        window = LoadWindow().start()
        time.sleep(probe)
        load = window.stop().foreign_cores
        if load < threshold or time.monotonic() >= deadline:
            return load
