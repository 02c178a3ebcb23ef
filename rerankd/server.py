"""Running the app under uvicorn, with a graceful drain on SIGTERM.

The first SIGTERM (or Ctrl-C) turns /health to 503 and refuses new work, lets in-flight
requests finish for up to `drain_seconds`, then stops uvicorn; a second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType
from typing import Any

import uvicorn

from rerankd import logs
from rerankd.api import create_app
from rerankd.api.lifecycle import Lifecycle
from rerankd.config import Settings
from rerankd.connections import guarded_protocol
from rerankd.metrics import Metrics

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self.exit_code = 0
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app = self.config.loaded_app
        if self._draining or app is None:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        lifecycle: Lifecycle = _unwrap(app).state.lifecycle
        lifecycle.draining = True
        logger.info("draining: new requests are refused; %d in flight", lifecycle.in_flight)
        asyncio.get_event_loop().create_task(self._drain(lifecycle))

    async def _drain(self, lifecycle: Lifecycle) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_seconds
        while lifecycle.in_flight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.05)  # uvicorn's own shutdown waits by polling the same way
        self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        bound = [sock.getsockname() for server in self.servers for sock in server.sockets or ()]
        if self.started and bound:  # the port really bound, even for --port 0
            host, port = str(bound[0][0]), int(bound[0][1])
            base = f"http://{browsable(host)}:{port}"
            logger.info(
                "playground: %s/ ; API reference: %s/docs (and /redoc)",
                base,
                base,
                extra={"playground": f"{base}/", "docs": f"{base}/docs"},
            )

    def fatal(self, exc: BaseException) -> None:
        self.exit_code = 1
        self.should_exit = True


def browsable(host: str) -> str:
    """The host to type into a browser: a wildcard bind is reached at localhost."""
    if host in {"0.0.0.0", "::", ""}:
        return "localhost"
    return f"[{host}]" if ":" in host else host


def _unwrap(app: Any) -> Any:
    while not hasattr(app, "state") and hasattr(app, "app"):
        app = app.app  # uvicorn's proxy-headers / message-logger wrappers
    return app


def run(settings: Settings) -> int:
    # The CLI restores SIGPIPE's default so that `rerankd rerank | head` exits quietly; a server
    # must ignore it, or the first client that resets its connection mid-response kills it.
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    logs.configure(settings.log_level)
    holder: dict[str, DrainingServer] = {}
    app = create_app(settings, on_fatal=lambda exc: holder["server"].fatal(exc))
    metrics: Metrics = app.state.service.metrics
    closed = metrics.connections_closed.labels("header_timeout")
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_seconds) + 1,
        lifespan="on",
        # Slow and silent clients: see rerankd.connections (headers) and the request guard (body).
        http=guarded_protocol(settings.header_timeout, closed.inc),
        timeout_keep_alive=settings.keep_alive_timeout,
        limit_concurrency=settings.max_connections,
    )
    server = DrainingServer(config, settings.drain_seconds)
    holder["server"] = server
    server.run()
    return server.exit_code
