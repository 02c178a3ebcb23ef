"""Every compared system as a real server process on 127.0.0.1, started and stopped the same way.

A system is a name, the dialect its API speaks and a function that builds its command line
for a model directory and a port. Servers run in their own process group, so stopping one
stops whatever workers it forked, and nothing else.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import peers
from bench.fixtures import WORK

MAIN_PYTHON = Path(sys.executable)
THREADS = 2
LOGS = WORK / "logs"

Command = Callable[[Path, int], list[str]]


@dataclass(frozen=True)
class System:
    name: str
    dialect: str  # a key of bench.loadgen.DIALECTS
    command: Command
    env: Callable[[Path], dict[str, str]] = lambda model_dir: {}
    prepare: Callable[[Path], Path] = lambda model_dir: model_dir  # the directory it serves
    cwd: Callable[[Path], Path | None] = lambda model_dir: None  # default: the repository
    health: str = "/health"  # answers 200 once the server is up
    launch: Callable[[str, Path], str] | None = None  # after start: load the model, its name

    @property
    def family(self) -> str:
        return self.name.split("-")[0]


def _rerankd(backend: str, dtype: str) -> Command:
    def command(model_dir: Path, port: int) -> list[str]:
        return [
            str(MAIN_PYTHON),
            "-m",
            "rerankd",
            "serve",
            "--model",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend",
            backend,
            "--dtype",
            dtype,
            "--threads",
            str(THREADS),
            # No --max-batch-tokens: each backend's own default is what is measured.
            "--cache-entries",
            "0",  # the score cache would turn repeated benchmark requests into look-ups
            "--request-timeout",
            "1800",  # a deep closed-loop queue on 2 cores waits minutes, by design
        ]

    return command


def _tutorial(model_dir: Path, port: int) -> list[str]:
    app = "bench.baselines.tutorial_server:app"
    return [str(MAIN_PYTHON), "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]


def _infinity(engine: str, quantized: bool = False) -> Command:
    return lambda model_dir, port: peers.infinity_command(
        model_dir, engine, port, quantized=quantized
    )


SYSTEMS = {
    s.name: s
    for s in (
        System(
            "tutorial",
            "tutorial",
            _tutorial,
            env=lambda model_dir: {"TUTORIAL_MODEL": str(model_dir)},
        ),
        System("infinity-torch", "infinity", _infinity("torch")),
        System(
            "infinity-optimum-fp32",
            "infinity",
            _infinity("optimum"),
            prepare=peers.ensure_optimum_dir,
            cwd=lambda model_dir: peers.infinity_cwd(model_dir, "optimum"),
        ),
        System(
            "infinity-optimum-int8",
            "infinity",
            _infinity("optimum", quantized=True),
            prepare=peers.ensure_optimum_dir,
            cwd=lambda model_dir: peers.infinity_cwd(model_dir, "optimum"),
        ),
        System(
            "xinference",
            "xinference",
            peers.xinference_command,
            health="/status",
            launch=peers.xinference_launch,
        ),
        System("rerankd-torch-fp32", "rerankd", _rerankd("torch", "float32")),
        System("rerankd-onnx-fp32", "rerankd", _rerankd("onnx", "float32")),
        System("rerankd-onnx-int8", "rerankd", _rerankd("onnx", "int8")),
        # AVX512_BF16 / AMX CPUs only (run_all skips it elsewhere); checked against fp32 at load.
        System("rerankd-torch-bf16", "rerankd", _rerankd("torch", "bfloat16")),
    )
}


@dataclass
class RunningServer:
    system: System
    url: str
    process: subprocess.Popen
    log: Path
    served_name: str
    startup_s: float = 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rerankd_available() -> bool:
    """Whether `python -m rerankd serve` exists yet (the server is written in parallel)."""
    probe = subprocess.run(
        [str(MAIN_PYTHON), "-m", "rerankd", "serve", "--help"],
        capture_output=True,
        timeout=120,
        env=peers.offline_env(),
    )
    return probe.returncode == 0 and b"--backend" in probe.stdout


@contextmanager
def serve(system: System, model_dir: Path, ready_timeout: float = 900.0) -> Iterator[RunningServer]:
    """Start `system` on a free loopback port, wait for /health, and always stop it."""
    served_dir = system.prepare(model_dir)
    port = free_port()
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{system.name}-{model_dir.name}.log"
    env = {
        **peers.offline_env(),
        "XDG_CACHE_HOME": str(WORK / "cache"),  # rerankd's ONNX exports stay in bench/.work
        "OMP_NUM_THREADS": str(THREADS),
        "MKL_NUM_THREADS": str(THREADS),
        **system.env(served_dir),
    }
    started = time.monotonic()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            system.command(served_dir, port),
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=system.cwd(served_dir) or Path(__file__).resolve().parent.parent,
            start_new_session=True,  # its own process group: stopped as one, nothing else
        )
    server = RunningServer(system, f"http://127.0.0.1:{port}", process, log, served_dir.name)
    try:
        _wait_healthy(server, ready_timeout)
        if system.launch is not None:
            server.served_name = system.launch(server.url, served_dir)
        server.startup_s = time.monotonic() - started
        yield server
    finally:
        _stop(process)


def _wait_healthy(server: RunningServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(
                f"{server.system.name} exited ({server.process.returncode}):\n{tail}"
            )
        try:
            health = httpx.get(server.url + server.system.health, timeout=5, trust_env=False)
            if health.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"{server.system.name} was not healthy within {timeout:.0f}s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    group = os.getpgid(process.pid)
    os.killpg(group, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(group, signal.SIGKILL)
        process.wait()
