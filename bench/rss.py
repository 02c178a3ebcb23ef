"""Peak resident memory of a server's whole process tree, sampled while the load runs."""

from __future__ import annotations

import threading

import psutil


def tree_rss(pid: int) -> int:
    """Bytes resident in `pid` and all its descendants right now (0 if it is gone)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


class PeakRss:
    """A background sampler: `with PeakRss(pid) as peak: ...; peak.bytes`."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.bytes = tree_rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.bytes = max(self.bytes, tree_rss(self.pid))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.bytes = max(self.bytes, tree_rss(self.pid))
