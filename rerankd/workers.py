"""How many processes serve the app, and each one's share of the CPU cores.

Under gunicorn or uvicorn with several workers, each worker process loads its own copy of
every model; on CPU each must then take cores / workers inference threads, not all of them.
The count is read from `RERANKD_WORKERS`, else from the server's own configuration, else
`WEB_CONCURRENCY`, else 1; the source is reported so the operator can see which won.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rerankd.config import Settings


@dataclass(frozen=True)
class WorkerShare:
    """How many processes serve this app, where that number came from, and this one's threads."""

    workers: int
    source: str
    threads: int | None  # inference threads per replica; None: all cores (one worker)
    cores: int


def server_name(argv: Sequence[str]) -> str | None:
    """'gunicorn' or 'uvicorn' when this process was started by that server's command."""
    if not argv:
        return None
    path = Path(argv[0])
    names = {path.stem, path.parent.name if path.stem == "__main__" else ""}
    for server in ("gunicorn", "uvicorn"):
        if server in names:
            return server
    return None


def gunicorn_workers(argv: Sequence[str]) -> int | None:
    """The worker count gunicorn itself resolved from the same command line and environment."""
    from gunicorn.app.wsgiapp import WSGIApplication

    saved = sys.argv
    sys.argv = list(argv)
    try:
        return int(WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]").cfg.workers)
    except SystemExit:  # gunicorn reports a bad configuration by exiting; it already started
        return None
    finally:
        sys.argv = saved


def uvicorn_workers(argv: Sequence[str], environ: Mapping[str, str]) -> int | None:
    """uvicorn's `--workers` (or UVICORN_WORKERS), else its WEB_CONCURRENCY default."""
    import click
    from uvicorn.main import main

    try:
        context = main.make_context("uvicorn", list(argv[1:]), resilient_parsing=True)
    except click.ClickException:
        return None
    workers = context.params.get("workers")
    if workers is None and environ.get("WEB_CONCURRENCY", "").isdigit():
        workers = int(environ["WEB_CONCURRENCY"])
    return int(workers) if workers else None


def detect_workers(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[int, str]:
    """(worker count, where it came from)."""
    explicit = environ.get("RERANKD_WORKERS", "").strip()
    if explicit:
        if not explicit.isdigit() or int(explicit) < 1:
            raise ValueError(f"RERANKD_WORKERS must be a whole number >= 1, not {explicit!r}")
        return int(explicit), "RERANKD_WORKERS"
    server = server_name(argv)
    if server == "gunicorn":
        count = gunicorn_workers(argv)
        if count:
            return count, "gunicorn's configuration (--workers, GUNICORN_CMD_ARGS, WEB_CONCURRENCY)"
    if server == "uvicorn":
        count = uvicorn_workers(argv, environ)
        if count:
            return count, "uvicorn's configuration (--workers, UVICORN_WORKERS, WEB_CONCURRENCY)"
    concurrency = environ.get("WEB_CONCURRENCY", "").strip()
    if concurrency.isdigit() and int(concurrency) >= 1:
        return int(concurrency), "WEB_CONCURRENCY"
    return 1, "default (one worker)"


def share_cores(
    settings: Settings, argv: Sequence[str], environ: Mapping[str, str]
) -> tuple[Settings, WorkerShare]:
    """Settings with this worker's share of the CPU threads, and the share it describes."""
    workers, source = detect_workers(argv, environ)
    cores = len(os.sched_getaffinity(0))
    threads = settings.threads
    on_cpu = all(device == "cpu" for device in settings.devices)
    if threads is None and on_cpu and workers > 1:
        threads = max(1, cores // (workers * settings.replicas))
        settings = settings.model_copy(update={"threads": threads})
    return settings, WorkerShare(workers, source, threads, cores)
