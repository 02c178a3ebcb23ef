"""Where the server is in its life: loading, serving, or draining after SIGTERM."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Lifecycle:
    """Shared by the request guard (which counts requests) and the server (which drains)."""

    draining: bool = False
    in_flight: int = 0  # requests being served, not counting /health, /metrics and /info
    load_error: BaseException | None = None
