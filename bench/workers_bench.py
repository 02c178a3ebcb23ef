"""Issue 19: `gunicorn -w 2` against one `rerankd serve` process, same model and load.

Each server runs alone (the other is stopped), with the caches off so every pair is scored:
closed-loop load of C clients for T seconds, pairs/s, p50/p95, and the resident memory of
each process (the gunicorn master, each worker; the single server). Rounds alternate
single / gunicorn so a shared machine's noise falls on both.

    python -m bench.workers_bench --model builtin -c 4 -t 30 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from bench.loadgen import DIALECTS, drive
from bench.machine import describe
from bench.workload import WorkloadSpec, make_requests

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work" / "workers"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(kind: str, model: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RERANKD_MODEL": model,
        "RERANKD_CACHE_ENTRIES": "0",
        "RERANKD_EMBEDDING_CACHE_MB": "0",
        "RERANKD_LOG_LEVEL": "warning",
    }
    if kind == "gunicorn":
        command = [
            str(Path(sys.executable).parent / "gunicorn"), "-k", "uvicorn.workers.UvicornWorker",
            "-w", "2", "-b", f"127.0.0.1:{port}", "rerankd.asgi:app",
        ]  # fmt: skip
    else:
        command = [
            sys.executable,
            "-m",
            "rerankd",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
    with log.open("ab") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    return process, f"http://127.0.0.1:{port}"


def wait_ready(process: subprocess.Popen[bytes], url: str, workers: int) -> None:
    ready: set[int] = set()
    deadline = time.monotonic() + 300
    while len(ready) < workers:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start (exit {process.returncode})")
        try:
            info = httpx.get(url + "/info", timeout=5).json()
            if info.get("ready"):
                ready.add(info["pid"])
        except httpx.HTTPError:
            time.sleep(0.3)


def memory(pid: int) -> dict[str, float]:
    root = psutil.Process(pid)
    found = {"master" if root.children() else "server": root.memory_info().rss / 2**20}
    for i, child in enumerate(root.children(recursive=True)):
        found[f"worker{i + 1}"] = child.memory_info().rss / 2**20
    return {k: round(v, 1) for k, v in found.items()}


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin")
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    parser.add_argument("-t", "--seconds", type=float, default=30.0)
    parser.add_argument("--documents", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    requests = make_requests(64, WorkloadSpec(documents=args.documents, chinese_share=0.0))
    results: list[dict[str, object]] = []
    for round_ in range(args.rounds):
        for kind in ("single", "gunicorn"):
            process, url = start(kind, args.model, WORK / f"{kind}.log")
            try:
                wait_ready(process, url, 2 if kind == "gunicorn" else 1)
                asyncio.run(  # warm-up
                    drive(url, DIALECTS["rerankd"], requests[:4], concurrency=2, max_requests=4,
                          max_seconds=0)
                )  # fmt: skip
                load = asyncio.run(
                    drive(url, DIALECTS["rerankd"], requests, concurrency=args.concurrency,
                          max_requests=100_000, max_seconds=args.seconds)
                )  # fmt: skip
                row = {
                    "round": round_,
                    "server": kind,
                    **load.summary(),
                    "rss_mb": memory(process.pid),
                }
                row.pop("error_samples")
                results.append(row)
                print(json.dumps(row), flush=True)
            finally:
                stop(process)
    print(json.dumps({"machine": describe()}, default=str))


if __name__ == "__main__":
    main()
