"""The guard every request passes: request id, body limit, auth, rate limit, drain, disconnect,
metrics and one structured log line.

Written as plain ASGI (not `BaseHTTPMiddleware`) so that it can watch for a client that
disconnects while its request waits in the queue, and cancel that request's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rerankd.api.docs import DOCS_PATHS
from rerankd.api.errors import error_body
from rerankd.api.lifecycle import Lifecycle
from rerankd.api.playground import PLAYGROUND_PATHS
from rerankd.api.security import Authenticator, Principal, RateLimiter, credential, request_id
from rerankd.cache import cache_namespace
from rerankd.config import Settings
from rerankd.errors import BodyTimeout, InternalError, NotReady, PayloadTooLarge, RerankError
from rerankd.memory import Trimmer
from rerankd.metrics import Metrics

access_log = logging.getLogger("rerankd.access")
logger = logging.getLogger(__name__)

# Responses after which the connection must not be reused: the rest of the body was not read.
_CLOSE_AFTER = frozenset({408, 413})

OPS_PATHS = frozenset({"/health", "/metrics", "/info"})
PROBE_PATHS = frozenset({"/health", "/metrics"})
PUBLIC_PATHS = frozenset({"/v1/cluster/auth", "/openapi.json"}) | DOCS_PATHS | PLAYGROUND_PATHS


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        metrics: Metrics,
        lifecycle: Lifecycle,
        authenticator: Authenticator | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.authenticator = authenticator
        self.rate_limiter = rate_limiter
        self.trimmer = Trimmer()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        rid = request_id(headers.get("x-request-id"))
        scope.setdefault("state", {})
        self.metrics.refresh()
        path: str = scope["path"]
        status = {"code": 0}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                extra = [
                    (b"x-request-id", rid.encode()),
                    *warning_headers(scope["state"].get("warnings", ())),
                ]
                if self.lifecycle.draining or message["status"] in _CLOSE_AFTER:
                    # Draining, the server is about to close every connection; after a 408 or
                    # 413 the unread body would be taken for the next request. Say so, so that
                    # no client sends its next request on a connection that will be reset.
                    extra.append((b"connection", b"close"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        is_ops = path in OPS_PATHS
        received = [0]  # body bytes, counted as they arrive
        if not is_ops:
            self.lifecycle.in_flight += 1
            self.metrics.in_flight.inc()
        try:
            await self._guard(scope, headers, path)
            await self._run_until_disconnect(
                scope, self._limit_body(receive, received), send_with_id
            )
        except RerankError as error:
            await self._reject(send_with_id, error, scope)
        except Exception:
            # Logged here once, with its request id; not re-raised, so that neither Starlette
            # nor uvicorn logs the same traceback again.
            logger.exception("unhandled error on %s", path, extra={"request_id": rid})
            if not status["code"]:
                await self._reject(send_with_id, InternalError("internal server error"), scope)
        finally:
            if not is_ops:
                self.lifecycle.in_flight -= 1
                self.metrics.in_flight.dec()
            self.trimmer.after_request(received[0])  # give a large request's memory back
            self._record(scope, path, status["code"] or 499, started, rid, headers)

    async def _guard(self, scope: Scope, headers: dict[str, str], path: str) -> None:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.settings.max_body_bytes:
            raise self._too_large()
        if path in PUBLIC_PATHS:
            return
        if path in OPS_PATHS and not self.settings.auth_ops:
            self._identify(scope, headers)  # open, but an admin credential sees more of /info
            return
        if self.lifecycle.draining and path not in OPS_PATHS:
            raise NotReady("the server is shutting down")
        principal = Principal(_client_address(scope))
        if self.authenticator is not None and self.authenticator.enabled:
            token = credential(headers)
            try:
                principal = self.authenticator.authenticate(token)
            except RerankError:
                if self.authenticator.required:  # else only registry changes need a key
                    self.metrics.rejected.labels("unauthorized").inc()
                    await self._count_failed_auth(principal)
                    raise
        scope["state"]["principal"] = principal
        if self.settings.cache_scope == "key":
            cache_namespace.set(principal.name)  # this request's task and the tasks it starts
        if self.rate_limiter is not None and path not in OPS_PATHS:
            try:
                await self.rate_limiter.check(principal.name)
            except RerankError:
                self.metrics.rejected.labels("rate_limited").inc()
                raise

    def _identify(self, scope: Scope, headers: dict[str, str]) -> None:
        """On an open route, who is calling if they say so; a wrong credential is anonymous."""
        token = credential(headers)
        if token and self.authenticator is not None and self.authenticator.enabled:
            with contextlib.suppress(RerankError):
                scope["state"]["principal"] = self.authenticator.authenticate(token)

    async def _count_failed_auth(self, address: Principal) -> None:
        """A failed authentication counts against its client address's rate limit, so that
        guessing keys is as limited as using one (429 once the address is over it)."""
        if self.rate_limiter is None:
            return
        try:
            await self.rate_limiter.check(address.name)
        except RerankError:
            self.metrics.rejected.labels("rate_limited").inc()
            raise

    def _limit_body(self, receive: Receive, received: list[int]) -> Receive:
        """Bound the body in bytes and in time.

        Bytes are counted as they arrive (a chunked body has no Content-Length to trust), and
        the whole body must arrive within `body_timeout` of the headers, so that a client
        sending it slowly, or stopping midway, cannot hold the request open (408).
        """
        limit = self.settings.max_body_bytes
        timeout = self.settings.body_timeout
        deadline = time.monotonic() + timeout
        seen = 0
        complete = False

        async def limited() -> Message:
            nonlocal seen, complete
            if complete:  # only the disconnect is left to wait for: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise BodyTimeout(f"the request body did not arrive within {timeout:g}s") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                received[0] = seen
                if seen > limit:
                    raise self._too_large()
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        return limited

    async def _run_until_disconnect(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; if the client goes away after sending its body, cancel the app's work."""
        body_done = asyncio.Event()
        disconnected: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        async def tracking_receive() -> Message:
            if body_done.is_set():
                return await asyncio.shield(disconnected)
            message = await receive()
            if message["type"] == "http.disconnect":
                if not disconnected.done():
                    disconnected.set_result(message)
            elif not message.get("more_body", False):
                body_done.set()
            return message

        async def watch() -> None:
            await body_done.wait()
            message = await receive()
            if not disconnected.done():
                disconnected.set_result(message)

        app_task = asyncio.ensure_future(self.app(scope, tracking_receive, send))
        watcher = asyncio.ensure_future(watch())
        try:
            done, _ = await asyncio.wait({app_task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if (
                app_task not in done
                and disconnected.done()
                and disconnected.result()["type"] == "http.disconnect"
            ):
                app_task.cancel()  # the client is gone: drop its queued pairs
            with contextlib.suppress(asyncio.CancelledError):
                await app_task
        finally:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
        if app_task.cancelled():
            return
        app_task.result()

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the body is larger than the limit of {self.settings.max_body_bytes} bytes"
        )

    async def _reject(
        self, send: Callable[[Message], Awaitable[None]], error: RerankError, scope: Scope
    ) -> None:
        dialect = scope.get("state", {}).get("dialect")
        body = json.dumps(error_body(dialect, error.status, error.message, error.type)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if error.retry_after is not None:
            headers.append((b"retry-after", str(max(1, round(error.retry_after))).encode()))
        if error.status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _record(
        self,
        scope: Scope,
        path: str,
        status: int,
        started: float,
        rid: str,
        headers: dict[str, str],
    ) -> None:
        elapsed = time.perf_counter() - started
        route = _route(scope, path)
        self.metrics.requests.labels(route, str(status)).inc()
        self.metrics.latency.labels(route).observe(elapsed)
        state = scope.get("state", {})
        # Health checks and scrapes come every few seconds: at info they would drown the log.
        level = logging.DEBUG if path in PROBE_PATHS else logging.INFO
        access_log.log(
            level,
            "request",
            extra={
                "request_id": rid,
                "method": scope.get("method"),
                "route": route,
                "model": state.get("model"),
                "documents": state.get("documents"),
                "tokens": state.get("tokens"),
                "status": status,
                "latency_ms": round(elapsed * 1000, 2),
                "client": _client_address(scope),
                "user_agent": headers.get("user-agent"),
            },
        )


def _route(scope: Scope, path: str) -> str:
    """The route template for metrics and logs, also for a request refused before routing."""
    route = getattr(scope.get("route"), "path", None)
    if isinstance(route, str):
        return route
    if path in OPS_PATHS | PUBLIC_PATHS:
        return path
    router = getattr(scope.get("app"), "router", None)
    for candidate in getattr(router, "routes", ()):
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            return str(getattr(candidate, "path", path))
    return "unmatched"


def warning_headers(warnings: Iterable[str]) -> list[tuple[bytes, bytes]]:
    """RFC 7234 `Warning: 299 rerankd "text"` headers (299: a persistent warning)."""
    headers = []
    for text in warnings:
        quoted = text.replace("\\", "\\\\").replace('"', '\\"')
        headers.append((b"warning", f'299 rerankd "{quoted}"'.encode("ascii", "replace")))
    return headers


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return f"ip:{client[0]}" if client else "ip:unknown"
