"""Names the shared store was just asked about and had nothing for, remembered briefly.

A request that names a model not running here makes the registry ask the store whether it
was launched elsewhere (a synchronous read, on the event loop). A flood of requests for one
unknown name would read the store once each; remembering the miss for a second makes that
one read a second, and bounds what a stalled store can cost. Bounded in size, so a flood of
distinct names cannot grow it: the oldest entry goes first.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MISS_SECONDS = 1.0
MAX_NAMES = 1024


class MissMemo:
    def __init__(
        self,
        seconds: float = MISS_SECONDS,
        size: int = MAX_NAMES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds, self.size, self._clock = seconds, size, clock
        self._until: dict[str, float] = {}  # name -> when the miss is forgotten, oldest first

    def __len__(self) -> int:
        return len(self._until)

    def missed(self, name: str) -> bool:
        """Whether the store had nothing for `name` less than `seconds` ago."""
        until = self._until.get(name)
        if until is None:
            return False
        if self._clock() < until:
            return True
        del self._until[name]
        return False

    def add(self, name: str) -> None:
        self._until.pop(name, None)  # re-added: now the newest
        while len(self._until) >= self.size:
            del self._until[next(iter(self._until))]
        self._until[name] = self._clock() + self.seconds

    def clear(self) -> None:
        """Forget every miss (the store's state changed)."""
        self._until.clear()
