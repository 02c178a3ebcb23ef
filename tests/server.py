"""Start a real rerankd server (`python -m rerankd serve`) in a subprocess for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx


def metric(text: str, name: str, labels: str = "") -> float:
    """Sum of the samples of one metric in Prometheus text (optionally filtered by a label substring)."""
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A running server: its base URL, its process, and its captured log."""

    def __init__(self, process: subprocess.Popen, url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)


@contextmanager
def run_server(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    log_dir: Path,
    ready_timeout: float = 120.0,
    wait_ready: bool = True,
    module: str = "rerankd",
) -> Iterator[ServerProcess]:
    """`python -m MODULE serve ARGS --port <free>`; waits until /health answers 200."""
    port = free_port()
    log = log_dir / f"server-{port}.log"
    command = [sys.executable, "-m", module, "serve", "--host", "127.0.0.1", "--port", str(port)]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, *args], stdout=sink, stderr=subprocess.STDOUT, env=full_env
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log)
    try:
        if wait_ready:
            _wait_healthy(server, ready_timeout)
        yield server
    finally:
        server.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_healthy(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.logs()}")
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not healthy after {timeout}s:\n{server.logs()}")
