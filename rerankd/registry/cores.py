"""The CPU core budget that models launched side by side divide between them.

Each CPU replica launched without an explicit thread count gets an equal share of the budget,
counted over every CPU replica that runs once it has started: `budget // (running + new)`,
at least one. Models already running keep the threads they started with (ONNX Runtime
sessions and torch's thread pools are sized when they are created), and a terminated model's
cores go back to the budget for the next launch. An explicit `threads` is taken as given and
counted against the budget; going over it is allowed, with a warning. A failed load gives its
cores back at once.
"""

from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger(__name__)


class CoreBudget:
    def __init__(self, total: int | None = None) -> None:
        self.total = total or len(os.sched_getaffinity(0))
        self._held: dict[str, list[int]] = {}  # uid -> threads of each CPU replica
        self._lock = threading.Lock()

    def take(self, uid: str, cpu_replicas: int, threads: int | None, planned: int = 0) -> int:
        """Threads for each of `uid`'s CPU replicas, held until `give_back(uid)`.

        `planned`: CPU replicas of models about to be launched with this one (the start-up
        list), so the first of them does not take every core.
        """
        with self._lock:
            running = sum(len(v) for v in self._held.values())
            share = threads or max(1, self.total // max(1, running + cpu_replicas + planned))
            if cpu_replicas:
                self._held[uid] = [share] * cpu_replicas
            used = sum(sum(v) for v in self._held.values())
        if threads and cpu_replicas and used > self.total:
            logger.warning(
                "CPU replicas now use %d threads on a budget of %d cores", used, self.total
            )
        return share

    def give_back(self, uid: str) -> None:
        with self._lock:
            self._held.pop(uid, None)

    def summary(self) -> dict[str, object]:
        with self._lock:
            return {
                "cores": self.total,
                "held": {uid: sum(t) for uid, t in self._held.items()},
            }
