"""Cheap admission: refuse before tokenizing, and say when to come back.

An overloaded server must answer 429 in milliseconds, not after spending the CPU it lacks on
tokenizing a request it will refuse. So a request's tokens are first *estimated* from its
characters (bounded by what the model can run), the queue is checked with that estimate,
and only an admitted request is tokenized; the exact count is checked again at submission.

`Retry-After` comes from how fast the queue has been draining, not a constant: a client told
to come back in 1 s while the queue needs 20 s to drain only comes back to another 429.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Iterable

# Typical English subword tokenizers average ~4 characters per token; CJK text is closer to
# one. Too low an estimate only means the exact check after tokenization does the refusing.
CHARS_PER_TOKEN = 4

RETRY_AFTER_MIN = 1.0
RETRY_AFTER_MAX = 60.0


def estimate_tokens(
    query_chars: int, document_chars: Iterable[int], max_length: int, max_sequences_per_doc: int
) -> int:
    """A request's tokens guessed from characters, never above what the model would run."""
    query = math.ceil(query_chars / CHARS_PER_TOKEN)
    cap = max_length * max_sequences_per_doc
    return sum(min(query + math.ceil(n / CHARS_PER_TOKEN), cap) for n in document_chars)


class DrainRate:
    """Tokens per second the replicas completed over the last `window` seconds."""

    def __init__(self, window: float = 10.0) -> None:
        self._window = window
        self._done: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()

    def add(self, tokens: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._done.append((now, tokens))
            self._trim(now)

    def per_second(self, now: float | None = None) -> float | None:
        """None until something completed in the window."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if not self._done:
                return None
            span = max(now - self._done[0][0], 1.0)
            return sum(tokens for _, tokens in self._done) / span

    def retry_after(self, excess_tokens: int, now: float | None = None) -> float:
        """Seconds until `excess_tokens` more have drained, clamped to [1, 60]."""
        rate = self.per_second(now)
        if rate is None or rate <= 0:
            return RETRY_AFTER_MIN
        return min(RETRY_AFTER_MAX, max(RETRY_AFTER_MIN, excess_tokens / rate))

    def _trim(self, now: float) -> None:
        while self._done and self._done[0][0] < now - self._window:
            self._done.popleft()
