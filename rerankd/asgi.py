"""`rerankd.asgi:app`: the application for other ASGI servers, configured from the environment.

    gunicorn -k uvicorn.workers.UvicornWorker -w 2 -b 0.0.0.0:8000 rerankd.asgi:app
    uvicorn rerankd.asgi:app --workers 2

Settings come from the same `RERANKD_*` variables as `rerankd serve` (there are no flags
here: the command line belongs to the server). Each worker process loads its own copy of
every model, so on CPU each worker takes its share of the cores, cores / workers threads
(divided again among `RERANKD_REPLICAS`), instead of every worker spawning a thread per core
and all of them fighting over the same cores. The worker count is read, in this order, from
`RERANKD_WORKERS`, the server's own configuration (gunicorn's `-w`/`--workers`,
`GUNICORN_CMD_ARGS`, its config file, or `WEB_CONCURRENCY`, its default; uvicorn's
`--workers`, `UVICORN_WORKERS` or `WEB_CONCURRENCY`), else 1. An explicit `RERANKD_THREADS`
always wins. The start-up log line says which source was used.

Under gunicorn (and uvicorn with several workers) `/metrics` adds up every worker: rerankd
turns on prometheus-client's multiprocess mode itself (see `rerankd.multiproc`) before any
metric is created; nothing needs configuring.

This is the one module that reads the environment at import time: it is an entry point, like
the CLI, and gunicorn and uvicorn only know how to import an attribute.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI

from rerankd import logs, multiproc
from rerankd.config import Settings
from rerankd.workers import server_name, share_cores

logger = logging.getLogger(__name__)

# gunicorn's WORKER_BOOT_ERROR: a worker exiting with it makes the arbiter stop, instead of
# respawning a worker whose model can never load.
BOOT_ERROR_EXIT_CODE = 3


def build(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> FastAPI:
    """The app for this worker process: settings from the environment, threads shared out,
    metrics shared with the other workers of the same master."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    from_environment: dict[str, Any] = {}  # no flags here: every setting is RERANKD_*
    settings = Settings(**from_environment)
    logs.configure(settings.log_level)
    settings, share = share_cores(settings, argv, environ)
    if share.workers > 1 and not all(device == "cpu" for device in settings.devices):
        logger.warning(
            "%d workers share %s: each loads its own copy of every model and they queue for "
            "the same GPU; one worker (rerankd serve) batches better",
            share.workers,
            settings.device,
        )
    logger.info(
        "worker %d of %d (from %s): %s inference threads per replica on %d cores",
        os.getpid(),
        share.workers,
        share.source,
        share.threads or "all",
        share.cores,
        extra={"workers": share.workers, "workers_from": share.source, "threads": share.threads},
    )
    server = server_name(argv)
    if environ is os.environ and (server == "gunicorn" or share.workers > 1):
        shared = multiproc.prepare(server or "uvicorn", os.environ)
        atexit.register(multiproc.worker_exit, str(shared) if shared else None)
        logger.info("metrics of every worker are shared through %s", shared)
    from rerankd.api import create_app  # after multiproc.prepare: metrics made from here on

    app = create_app(settings, on_fatal=_stop, load_before_serving=True)
    app.state.workers = asdict(share)
    return app


def _stop(exc: BaseException) -> None:
    """A model that cannot load stops the server (gunicorn halts instead of respawning)."""
    logger.error("stopping: the models could not be loaded (%s)", exc)
    logging.shutdown()
    os._exit(BOOT_ERROR_EXIT_CODE)


app = build()
