"""Log lines that repeat during an outage, at most once per interval, with a count of the rest.

An outage of a shared dependency (Redis) fails every request; one warning per request would
drown the log, one per process lifetime hides the next outage. Each failure still counts in
the metrics; the log says it is happening, and how often, once per interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class ThrottledLog:
    """`warn(...)` logs at most once per `interval` seconds, saying how many it held back."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._next = 0.0
        self._held = 0

    def warn(self, message: str, *args: object) -> bool:
        """Log now (True) or count it for the next line (False)."""
        now = self._clock()
        if now < self._next:
            self._held += 1
            return False
        held, self._held = self._held, 0
        self._next = now + self._interval
        if held:
            self._logger.warning(
                message + " (%d more since the last such line)", *args, held, extra={"held": held}
            )
        else:
            self._logger.warning(message, *args)
        return True
