"""Connection-level guard against slow and silent clients (slowloris).

uvicorn closes an idle keep-alive connection, but any byte resets that timer, and it has no
limit at all on how long a client may take to send a request's headers: a client that sends
one header byte every few seconds, or opens a connection and sends nothing, holds a socket
(and a file descriptor) forever. The ASGI app cannot help, since it is only called once the
headers are complete. So this protocol, uvicorn's own h11 one plus a timer, closes a
connection whose request headers are not complete `header_timeout` seconds after the
connection opened or after its previous response. Slow *bodies* are the request guard's
(`rerankd.api.middleware`), which answers them 408.

The h11 implementation is chosen explicitly (not httptools when installed) so that one
tested code path runs everywhere.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers."""

    header_timeout: float = 5.0
    timeout_hooks: tuple[Callable[[], None], ...] = ()  # a tuple: never bound as a method

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_timer()  # the headers are in: the body has its own deadline

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # the next request's headers must come in time too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if _unread(self.transport):
            # The client did send; a busy event loop just has not read it yet. Look again soon.
            self._header_timer = self.loop.call_later(
                min(1.0, self.header_timeout), self._headers_too_slow
            )
            return
        logger.debug("closing a connection that sent no complete request headers in time")
        for hook in self.timeout_hooks:
            hook()
        self.transport.close()


def _unread(transport: asyncio.Transport) -> bool:
    """Whether bytes wait in the socket's receive buffer, not yet read by the event loop."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        with sock.dup() as copy:  # asyncio's socket wrapper has no recv; a dup shares the buffer
            return bool(copy.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # BlockingIOError: nothing there
        return False


def guarded_protocol(
    header_timeout: float, on_timeout: Callable[[], None] | None = None
) -> type[GuardedH11Protocol]:
    """A protocol class with these settings, for `uvicorn.Config(http=...)`."""
    hooks = (on_timeout,) if on_timeout is not None else ()
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout": header_timeout, "timeout_hooks": hooks},
    )
