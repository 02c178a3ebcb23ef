"""Measure several servers on one model, interleaved, so shared-machine noise hits all alike.

All servers of a model are started first (each waits idle while the others are measured);
then, for each concurrency level, every system gets its point in turn. A burst of load from
another process on the machine therefore lands on several systems' points instead of
silently favouring whichever system ran during a quiet minute.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench import cpuload, servers
from bench.flops import EncoderShape
from bench.loadgen import DIALECTS, LoadResult, drive
from bench.workload import Request, WorkloadSpec, make_requests

WARMUP = WorkloadSpec(documents=8, max_words=60, seed=99)  # loads kernels, costs little
logger = logging.getLogger("bench")


@dataclass
class Point:
    """What one server at one concurrency is asked to do."""

    requests: list[Request]
    lengths: list[list[int]]
    shape: EncoderShape
    max_requests: int
    seconds: float
    checked: int


@dataclass
class Entry:
    """One system's results on one model, built point by point."""

    system: str
    points: list[dict] = field(default_factory=list)
    scores: dict[str, list[list[float]]] = field(default_factory=dict)
    startup_s: float | None = None
    failed: str | None = None

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"system": self.system, "points": self.points}
        if self.startup_s is not None:
            data["startup_s"] = self.startup_s
        if self.failed:
            data["failed"] = self.failed
        return data


def run_once(server: servers.RunningServer, requests: list[Request], **kwargs) -> LoadResult:
    """One closed-loop run against a running server (also used for warm-up and v2-m3)."""
    return asyncio.run(
        drive(
            server.url,
            DIALECTS[server.system.dialect],
            requests,
            model=server.served_name,
            server_pid=server.process.pid,
            **kwargs,
        )
    )


def measure(server: servers.RunningServer, level: int, point: Point) -> tuple[dict, LoadResult]:
    window = cpuload.LoadWindow((server.process.pid, os.getpid())).start()
    result = run_once(
        server,
        point.requests,
        concurrency=level,
        max_requests=point.max_requests,
        max_seconds=point.seconds,
        keep_scores_for=point.checked,
    )
    window.stop()
    summary = result.summary()
    useful = sum(point.shape.total(point.lengths[i]) for i in result.completed)
    summary["useful_gflops"] = round(useful / 1e9 / result.seconds, 2) if result.seconds else 0.0
    summary["foreign_cores"] = round(window.foreign_cores, 2)
    summary["latencies"] = [round(x, 3) for x in result.latencies]
    return summary, result


def compare(
    systems: list[str], model_dir: Path, levels: tuple[int, ...], point: Point, rounds: int
) -> list[Entry]:
    """Start every system on `model_dir`, then measure level by level, system by system."""
    entries = {name: Entry(name) for name in systems}
    running: dict[str, servers.RunningServer] = {}
    with ExitStack() as stack:
        for name in systems:
            try:
                server = stack.enter_context(servers.serve(servers.SYSTEMS[name], model_dir))
                run_once(
                    server, make_requests(1, WARMUP), concurrency=1, max_requests=1, max_seconds=0
                )
            except (RuntimeError, TimeoutError, OSError) as exc:
                entries[name].failed = f"{type(exc).__name__}: {str(exc)[-1500:]}"
                logger.warning("%s failed to start: %s", name, entries[name].failed[-300:])
                continue
            entries[name].startup_s = round(server.startup_s, 1)
            running[name] = server
        for level in levels:
            at_level = Point(**{**point.__dict__, "max_requests": level * rounds})
            for name, server in running.items():
                summary, result = measure(server, level, at_level)
                entries[name].points.append(summary)
                for index, seen in result.scores.items():
                    entries[name].scores.setdefault(str(index), []).extend(seen)
                logger.info(
                    "%s c=%d: %.2f pairs/s, p50 %.1fs, %d errors, other load %.2f",
                    name,
                    level,
                    result.pairs_per_s,
                    result.percentile(50),
                    result.errors,
                    summary["foreign_cores"],
                )
    return list(entries.values())
