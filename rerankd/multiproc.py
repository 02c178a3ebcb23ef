"""Metrics shared by the workers of one gunicorn (or uvicorn `--workers`) master.

Each worker is its own process with its own counters, so a scrape that lands on one worker
would see only its share. prometheus-client's multiprocess mode has every worker write its
values to files in one directory and any worker read them all. rerankd sets this up itself:
the directory is `<tmp>/rerankd-metrics-<master pid>` (every worker of a master finds the
same one from its parent pid, and a reload keeps it, so counters never go back), stale
directories of masters that are gone are removed, and a worker's live gauges are removed
when it exits or is found dead. `PROMETHEUS_MULTIPROC_DIR`, when the operator sets it, wins.

`rerankd serve` (one process) does not use files: its metrics stay in memory.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import shutil
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

logger = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PREFIX = "rerankd-metrics-"
_LIVE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db$")


def prepare(
    server: str | None, environ: MutableMapping[str, str], parent: int | None = None
) -> Path | None:
    """Turn on multiprocess metrics for a worker of `server` ('gunicorn' or 'uvicorn');
    returns the directory, or None for a process that serves alone."""
    if server is None:
        return None
    chosen = environ.get(ENV)
    if chosen:
        path = Path(chosen)
    else:
        root = Path(tempfile.gettempdir())
        path = root / f"{_PREFIX}{parent or os.getppid()}"
        _remove_stale(root)
        environ[ENV] = str(path)
    path.mkdir(parents=True, exist_ok=True)
    _use_files()
    return path


def _use_files() -> None:
    """Make metrics created from now on write to files, even if prometheus-client was
    imported before the variable was set (it picks its value class at import)."""
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def _remove_stale(root: Path) -> None:
    """Directories of masters that no longer run (their counters belong to no one)."""
    for entry in root.glob(_PREFIX + "*"):
        pid = entry.name.removeprefix(_PREFIX)
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def sweep(path: str) -> None:
    """Remove the live gauges of workers that died without saying so (SIGKILL, OOM)."""
    from prometheus_client import multiprocess

    pids = {
        int(m.group(1))
        for f in glob.glob(os.path.join(path, "gauge_live*_*.db"))
        if (m := _LIVE_FILE.search(f))
    }
    for pid in pids:
        if pid != os.getpid() and not _alive(pid):
            with contextlib.suppress(OSError):
                multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def collect(path: str) -> bytes:
    """The Prometheus text of every worker's metrics."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    sweep(path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def worker_exit(path: str | None) -> None:
    """This worker is leaving: its live gauges must stop counting."""
    if path is None:
        return
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]
