"""Hostile clients on raw sockets against a real server: slow headers (slowloris), silent
connections, bodies that stall or trickle, idle keep-alive, resets mid-response. Each is
closed by the server's timeouts while it keeps answering everyone else."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import ServerProcess, metric, run_server

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
KEEP_ALIVE = 1
# How long a test waits for the server to close a connection: a bound, not a measurement.
PATIENCE = 20.0


@pytest.fixture(scope="module")
def server(bert_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--model", str(bert_model), "--max-length", "64"]
    args += ["--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT)]
    args += ["--keep-alive-timeout", str(KEEP_ALIVE)]
    with run_server(args, log_dir=tmp_path_factory.mktemp("hostile")) as running:
        yield running


def connect(server: ServerProcess) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=PATIENCE)
    return sock


def read_until_closed(sock: socket.socket, patience: float = PATIENCE) -> tuple[bytes, bool]:
    """Everything the server sends until it closes; (data, closed within `patience`)."""
    sock.settimeout(0.2)
    data = b""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def trickle(sock: socket.socket, payload: bytes, every: float, stop: threading.Event) -> None:
    """Send `payload` one byte every `every` seconds until the server closes or `stop`."""
    for byte in payload:
        if stop.wait(every):
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return


def assert_still_serving(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
    body = {"query": "q", "documents": ["a short passage", "another one"]}
    assert httpx.post(server.url + "/rerank", json=body, timeout=30).status_code == 200


def test_slow_headers_and_silent_connections_are_closed(server: ServerProcess) -> None:
    before = metric(httpx.get(server.url + "/metrics").text, "rerankd_connections_closed_total")
    stop = threading.Event()
    slow = [connect(server) for _ in range(20)]
    silent = [connect(server) for _ in range(100)]
    headers = b"POST /rerank HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"
    threads = [
        threading.Thread(target=trickle, args=(sock, headers, 0.2, stop), daemon=True)
        for sock in slow
    ]
    for thread in threads:
        thread.start()
    try:
        assert_still_serving(server)  # while 120 hostile connections are open
        outcomes = [read_until_closed(sock) for sock in slow + silent]
    finally:
        stop.set()
        for sock in slow + silent:
            sock.close()
    assert all(closed for _, closed in outcomes), "every slow or silent connection is closed"
    assert all(data == b"" for data, _ in outcomes), "no response to a request never completed"
    after = metric(httpx.get(server.url + "/metrics").text, "rerankd_connections_closed_total")
    assert after - before == 120
    assert_still_serving(server)


def test_a_body_that_stalls_or_trickles_gets_408_and_is_closed(server: ServerProcess) -> None:
    head = (
        b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    stalled = [connect(server) for _ in range(10)]
    for sock in stalled:
        sock.sendall(head + b'{"query": ')  # and then nothing
    trickling = [connect(server) for _ in range(5)]
    stop = threading.Event()
    for sock in trickling:
        sock.sendall(head)
    threads = [
        threading.Thread(target=trickle, args=(sock, b"x" * 1000, 0.1, stop), daemon=True)
        for sock in trickling
    ]
    for thread in threads:
        thread.start()
    try:
        assert_still_serving(server)
        outcomes = [read_until_closed(sock) for sock in stalled + trickling]
    finally:
        stop.set()
        for sock in stalled + trickling:
            sock.close()
    for data, closed in outcomes:
        assert closed
        head_text, _, body = data.partition(b"\r\n\r\n")
        assert head_text.startswith(b"HTTP/1.1 408"), data[:200]
        assert b"connection: close" in head_text.lower()
        error = json.loads(body)["error"]
        assert error["code"] == 408 and "did not arrive within" in error["message"]
    assert_still_serving(server)


def test_an_idle_keep_alive_connection_is_closed(server: ServerProcess) -> None:
    sock = connect(server)
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data, closed = read_until_closed(sock)
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 200") and closed


def test_keep_alive_cannot_be_held_by_dripping_the_next_request(server: ServerProcess) -> None:
    """Any byte resets uvicorn's keep-alive timer; the header deadline still applies."""
    sock = connect(server)
    stop = threading.Event()
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        next_request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"b" * 200 + b"\r\n\r\n"
        dripper = threading.Thread(
            target=trickle, args=(sock, next_request, 0.2, stop), daemon=True
        )
        dripper.start()
        data, closed = read_until_closed(sock)
    finally:
        stop.set()
        sock.close()
    assert data.count(b"HTTP/1.1 200") == 1 and closed


def test_clients_that_vanish_mid_response_do_not_hurt_the_server(server: ServerProcess) -> None:
    """A reset or close while the server writes must never kill it: the server ignores
    SIGPIPE (the CLI's default, fine for `rerankd rerank | head`, would let a vanished client
    end the process)."""
    documents = json.dumps({"query": "q", "documents": ["passage " * 200] * 50}).encode()
    requests = [
        b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(documents)}\r\n\r\n".encode()
        + documents,
    ]
    for attempt in range(40):
        sock = connect(server)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        if attempt % 2:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(requests[attempt % 4 // 2])
        if attempt % 8 >= 4:
            sock.recv(1)  # gone once the response has begun
        sock.close()
    assert server.process.poll() is None
    assert_still_serving(server)


def test_many_small_concurrent_requests_all_get_answers(server: ServerProcess) -> None:
    import asyncio

    async def flood() -> list[int]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
            body = {"query": "q", "documents": ["d"]}
            responses = await asyncio.gather(
                *(client.post("/rerank", json=body) for _ in range(300)), return_exceptions=True
            )
            return [r.status_code if isinstance(r, httpx.Response) else repr(r) for r in responses]

    statuses = asyncio.run(flood())
    assert set(statuses) <= {200, 429}, {s for s in statuses if s not in (200, 429)}
    assert statuses.count(200) > 0
    assert_still_serving(server)
