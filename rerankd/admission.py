"""Cheap admission: refuse before tokenizing, and say when to come back.

An overloaded server must answer 429 in milliseconds, not after spending the CPU it lacks on
tokenizing a request it will refuse. So a request's tokens are first *estimated* from its
characters (bounded by what the model can run), the queue is checked with that estimate,
and only an admitted request is tokenized; the exact count is checked again at submission.

`Retry-After` comes from how fast the queue has been draining, not a constant: a client told
to come back in 1 s while the queue needs 20 s to drain only comes back to another 429. The
same rate bounds the queue in time: a request that would wait past its deadline is refused
now (429) instead of timing out later (504) after taking a place in the queue.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Iterable

from rerankd.engine.tokenize import CHARS_PER_TOKEN_BOUND

# Typical English subword tokenizers average ~4 characters per token; CJK text is closer to
# one. Too low an estimate only means the exact check after tokenization does the refusing.
CHARS_PER_TOKEN = 4

RETRY_AFTER_MIN = 1.0
RETRY_AFTER_MAX = 60.0


def estimate_tokens(
    query_chars: int, document_chars: Iterable[int], max_length: int, max_sequences_per_doc: int
) -> int:
    """A request's tokens guessed from characters, as the model would run them: a document
    longer than one sequence is cut into up to `max_sequences_per_doc` windows, and each
    window carries the query again."""
    query = math.ceil(query_chars / CHARS_PER_TOKEN)
    room = max(1, max_length - query)
    total = 0
    for n in document_chars:
        document = math.ceil(n / CHARS_PER_TOKEN)
        windows = min(max(1, math.ceil(document / room)), max_sequences_per_doc)
        total += min(windows * query + document, windows * max_length)
    return total


def estimate_chars(
    query_chars: int, document_chars: Iterable[int], max_length: int, max_sequences_per_doc: int
) -> int:
    """Characters a request's planning will tokenize: each document is cut first to what its
    sequences could reach (`rerankd.engine.tokenize.cut_text`), so a giant document costs
    that bound, not its length."""
    cap = CHARS_PER_TOKEN_BOUND * max_length * max_sequences_per_doc
    return query_chars + sum(min(n, cap) for n in document_chars)


class DrainRate:
    """Tokens per second the replicas run while busy, from the batches of the last `window`
    seconds: their speed, not the recent traffic, so that a lightly loaded server is not
    taken for a slow one."""

    def __init__(self, window: float = 10.0, replicas: int = 1) -> None:
        self._window = window
        self._replicas = replicas
        self._done: collections.deque[tuple[float, int, float]] = collections.deque()
        self._lock = threading.Lock()

    def add(self, tokens: int, seconds: float, now: float | None = None) -> None:
        """One batch of `tokens` real tokens ran in `seconds`."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._done.append((now, tokens, seconds))
            self._trim(now)

    def per_second(self, now: float | None = None) -> float | None:
        """None until a batch completed in the window."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            busy = sum(seconds for _, _, seconds in self._done)
            if busy <= 0:
                return None
            return self._replicas * sum(tokens for _, tokens, _ in self._done) / busy

    def retry_after(self, excess_tokens: int, now: float | None = None) -> float:
        """Seconds until `excess_tokens` more have drained, clamped to [1, 60]."""
        rate = self.per_second(now)
        if rate is None or rate <= 0:
            return RETRY_AFTER_MIN
        return min(RETRY_AFTER_MAX, max(RETRY_AFTER_MIN, excess_tokens / rate))

    def _trim(self, now: float) -> None:
        while self._done and self._done[0][0] < now - self._window:
            self._done.popleft()
