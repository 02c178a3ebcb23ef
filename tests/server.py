"""Start a real rerankd server (`python -m rerankd serve`) in a subprocess for tests."""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

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


class Zygote:
    """The client of `tests/zygote.py`: one warm interpreter per pytest worker, started at
    the first use (conftest starts it early, so its imports overlap the first tests)."""

    _instance: Zygote | None = None
    _guard = threading.Lock()

    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parents[1],
            env=self.env,
        )
        self.lock = threading.Lock()
        self.ready: bool | None = None

    @classmethod
    def get(cls) -> Zygote:
        with cls._guard:
            if cls._instance is None:
                cls._instance = cls()
                atexit.register(cls._instance.close)
            return cls._instance

    def _ask(self, request: dict[str, Any]) -> Any:
        stdin: IO[str] = self.process.stdin  # type: ignore[assignment]
        stdout: IO[str] = self.process.stdout  # type: ignore[assignment]
        stdin.write(json.dumps(request) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the test zygote exited ({self.process.poll()})")
        return json.loads(line)

    def usable(self, overrides: dict[str, str]) -> bool:
        """Whether a server may be forked: only when the test sets nothing but RERANKD_*
        variables, which rerankd reads when it starts. A variable that torch, transformers or
        huggingface_hub read when they are imported (HF_HOME, OMP_NUM_THREADS, ...) would be
        too late in a forked child, so a server that needs one starts the ordinary way. (The
        rest of the worker's environment is passed whole; libraries the tests import add to
        it, scikit-learn its KMP_* variables, which no server reads.)"""
        if any(not key.startswith("RERANKD_") for key in overrides):
            return False
        with self.lock:
            if self.ready is None:
                line = self.process.stdout.readline()  # type: ignore[union-attr]
                self.ready = bool(line) and bool(json.loads(line).get("ready"))
            return self.ready

    def spawn(self, module: str, argv: list[str], env: dict[str, str], log: Path) -> Forked:
        request = {"op": "spawn", "module": module, "argv": argv, "env": env}
        with self.lock:
            pid = self._ask({**request, "cwd": os.getcwd(), "log": str(log)})
        return Forked(self, int(pid), [module, *argv])

    def status(self, pid: int) -> int | None:
        with self.lock:
            answer = self._ask({"op": "status", "pid": pid})
        return None if answer is None else int(answer)

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Forked:
    """A server forked by the zygote, with the part of `subprocess.Popen` the tests use."""

    def __init__(self, zygote: Zygote, pid: int, args: list[str]) -> None:
        self.zygote = zygote
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.status(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.02)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def start_zygote() -> None:
    """Start this worker's zygote now, so its imports run while the first tests do."""
    if not os.environ.get("TESTS_NO_ZYGOTE"):
        Zygote.get()


class ServerProcess:
    """A running server: its base URL, its process, and its captured log."""

    def __init__(self, process: subprocess.Popen | Forked, url: str, log: Path) -> None:
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
    process: subprocess.Popen | Forked
    zygote = Zygote.get() if not os.environ.get("TESTS_NO_ZYGOTE") else None
    if zygote is not None and zygote.usable(env or {}):
        log.touch()
        process = zygote.spawn(module, [*command[3:], *args], full_env, log)
    else:
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
