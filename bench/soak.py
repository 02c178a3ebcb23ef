"""Soak: rerankd at twice its saturating load for ten minutes, watched every ten seconds.

    python -m bench.soak                      # 10 min, the MiniLM-L6-size model on ONNX
    python -m bench.soak --minutes 2 --out /tmp/soak   # a short look

First a short closed-loop calibration measures how many requests per second the server
completes (its saturating load); then requests arrive open-loop (Poisson) at twice that rate,
so the queue stays full and backpressure (429) is exercised the whole time. The mix: request
sizes from 4 to 32 passages, a share repeated (score-cache hits), a share with a long
document chunked, a share of bad requests (4xx expected). Every 10 s it records the server's
RSS, open file descriptors, queue depth, status counts, p50/p99 latency of answered requests
and of refusals. Verdicts: RSS flat after warm-up (under 5 % growth over the last 8 minutes
of a 10-minute run), zero 5xx, every 429 with Retry-After.

Writes bench/results/soak.json and docs/img/soak.png. Targets 127.0.0.1 only; every loop is
bounded in requests and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.fixtures import WORK, model_dir
from bench.machine import describe
from bench.rss import tree_rss
from bench.workload import WorkloadSpec, make_requests

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "soak.json"
FIGURE = ROOT / "docs" / "img" / "soak.png"
SAMPLE_SECONDS = 10.0
MAX_IN_FLIGHT = 256  # client-side bound on open requests (and sockets)


@dataclass
class Window:
    """What happened in one sampling interval."""

    t: float
    rss_mb: float = 0.0
    open_fds: float = 0.0
    queue_tokens: float = 0.0
    cache_entries: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    ok_latencies: list[float] = field(default_factory=list)
    refusal_latencies: list[float] = field(default_factory=list)
    missing_retry_after: int = 0
    transport_errors: int = 0

    def summary(self) -> dict[str, object]:
        return {
            "t": round(self.t, 1),
            "rss_mb": round(self.rss_mb, 1),
            "open_fds": self.open_fds,
            "queue_tokens": self.queue_tokens,
            "cache_entries": self.cache_entries,
            "statuses": dict(sorted(self.statuses.items())),
            "p50_ms": _pct(self.ok_latencies, 50),
            "p99_ms": _pct(self.ok_latencies, 99),
            "refusal_p50_ms": _pct(self.refusal_latencies, 50),
            "refusal_p99_ms": _pct(self.refusal_latencies, 99),
            "missing_retry_after": self.missing_retry_after,
            "transport_errors": self.transport_errors,
        }


def _pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))], 1)


class Mix:
    """The request stream: sizes, repeats, long documents and bad requests, seeded."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        spec = WorkloadSpec(documents=16, min_words=20, max_words=200, seed=seed)
        self.pool = make_requests(400, spec)
        self.sent: list[dict] = []
        self.long_document = " ".join(r.documents[0] for r in self.pool[:20])  # ~2,000 words

    def next(self) -> tuple[str, bytes | dict]:
        roll = self.rng.random()
        if roll < 0.05:
            return "bad", self.rng.choice(
                [b'{"query": "q", "documents": [', {"query": "", "documents": ["d"]},
                 {"query": "q", "documents": [1, 2]}, {"query": "q"}]
            )  # fmt: skip
        if roll < 0.25 and self.sent:
            return "repeat", self.rng.choice(self.sent)
        base = self.rng.choice(self.pool)
        count = self.rng.randint(4, 16)
        body: dict = {"query": base.query, "documents": list(base.documents[:count])}
        if roll < 0.30:  # a long document, chunked into at most 4 windows
            body["documents"] = [*body["documents"][:3], self.long_document]
            body["long_document_strategy"] = "chunk"
            body["max_chunks_per_doc"] = 4
        if len(self.sent) < 200:
            self.sent.append(body)
        return "new", body


def start_server(model: Path, port: int, log: Path, args: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "rerankd", "serve", "--model", str(model)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--backend", "onnx", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env["XDG_CACHE_HOME"] = str(WORK / "cache")
    with log.open("wb") as sink:
        return subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError("the server did not become healthy")


def metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )


async def calibrate(client: httpx.AsyncClient, mix: Mix, seconds: float) -> float:
    """Requests per second completed by a closed loop of 2 clients: the saturating load."""
    done = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            kind, body = mix.next()
            if kind == "bad":
                continue
            response = await client.post("/rerank", json=body)
            done += response.status_code == 200

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(2)))
    return done / (time.monotonic() - started)


async def soak(url: str, pid: int, rate: float, seconds: float, mix: Mix) -> list[Window]:
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=64)
    windows: list[Window] = []
    started = time.monotonic()
    current = Window(0.0)
    in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one(body: bytes | dict) -> None:
            window = current
            sent = time.monotonic()
            try:
                if isinstance(body, bytes):
                    headers = {"content-type": "application/json"}
                    response = await client.post("/rerank", content=body, headers=headers)
                else:
                    response = await client.post("/rerank", json=body)
            except httpx.HTTPError:
                window.transport_errors += 1
                return
            finally:
                in_flight.release()
            elapsed = time.monotonic() - sent
            code = str(response.status_code)
            window.statuses[code] = window.statuses.get(code, 0) + 1
            if response.status_code == 200:
                window.ok_latencies.append(elapsed)
            elif response.status_code == 429:
                window.refusal_latencies.append(elapsed)
                if "retry-after" not in response.headers:
                    window.missing_retry_after += 1

        rng = random.Random(11)
        next_sample = started + SAMPLE_SECONDS
        deadline = started + seconds
        while (now := time.monotonic()) < deadline:
            if now >= next_sample:
                await sample(client, pid, current)
                windows.append(current)
                print(json.dumps(current.summary()), flush=True)
                current = Window(now - started)
                next_sample += SAMPLE_SECONDS
            await asyncio.sleep(rng.expovariate(rate))
            await in_flight.acquire()
            _, body = mix.next()
            task = asyncio.ensure_future(one(body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        await sample(client, pid, current)
        windows.append(current)
    return windows


async def sample(client: httpx.AsyncClient, pid: int, window: Window) -> None:
    window.rss_mb = tree_rss(pid) / 2**20
    text = (await client.get("/metrics")).text
    window.open_fds = metric(text, "process_open_fds")
    window.queue_tokens = metric(text, "rerankd_queue_tokens")
    window.cache_entries = metric(text, "rerankd_cache_entries")


def verdicts(windows: list[Window], seconds: float) -> dict[str, object]:
    """The soak's pass/fail figures (RSS growth over the last 80 % of the run)."""
    warm = [w for w in windows if w.t >= 0.2 * seconds and w.rss_mb > 0]
    first, last = warm[0].rss_mb, statistics.mean(w.rss_mb for w in warm[-3:])
    total: dict[str, int] = {}
    for w in windows:
        for code, n in w.statuses.items():
            total[code] = total.get(code, 0) + n
    refusals = [x for w in windows for x in w.refusal_latencies]
    answered = [x for w in windows for x in w.ok_latencies]
    return {
        "statuses": dict(sorted(total.items())),
        "server_errors": sum(n for code, n in total.items() if code.startswith("5")),
        "transport_errors": sum(w.transport_errors for w in windows),
        "missing_retry_after": sum(w.missing_retry_after for w in windows),
        "rss_after_warmup_mb": round(first, 1),
        "rss_end_mb": round(last, 1),
        "rss_growth_pct": round(100 * (last - first) / first, 2),
        "refusal_p50_ms": _pct(refusals, 50),
        "refusal_p99_ms": _pct(refusals, 99),
        "answered_p50_ms": _pct(answered, 50),
        "answered_p99_ms": _pct(answered, 99),
        "max_open_fds": max(w.open_fds for w in windows),
    }


def plot(windows: list[Window], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [w.t / 60 for w in windows]
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), sharex=True)
    axes[0][0].plot(t, [w.rss_mb for w in windows], color="#1f77b4")
    axes[0][0].set_ylabel("server RSS (MiB)")
    axes[0][0].set_ylim(bottom=0)
    p50 = [s["p50_ms"] for s in (w.summary() for w in windows)]
    p99 = [s["p99_ms"] for s in (w.summary() for w in windows)]
    refusal = [s["refusal_p99_ms"] for s in (w.summary() for w in windows)]
    axes[0][1].plot(t, [x / 1000 if x else None for x in p50], label="200 p50")
    axes[0][1].plot(t, [x / 1000 if x else None for x in p99], label="200 p99")
    axes[0][1].plot(t, [x / 1000 if x else None for x in refusal], label="429 p99")
    axes[0][1].set_ylabel("latency (s)")
    axes[0][1].set_yscale("log")
    axes[0][1].legend(loc="upper left", fontsize=8)
    axes[1][0].plot(t, [w.queue_tokens / 1000 for w in windows], color="#2ca02c")
    axes[1][0].set_ylabel("queued tokens (thousands)")
    for code, color in (("200", "#1f77b4"), ("429", "#ff7f0e"), ("4xx", "#7f7f7f"), ("5xx", "red")):
        counts = []
        for w in windows:
            if code in ("4xx", "5xx"):
                counts.append(
                    sum(n for c, n in w.statuses.items() if c[0] == code[0] and c != "429")
                )
            else:
                counts.append(w.statuses.get(code, 0))
        axes[1][1].plot(t, [c / SAMPLE_SECONDS for c in counts], label=code, color=color)
    axes[1][1].set_ylabel("responses per second")
    axes[1][1].legend(loc="upper left", fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("minutes")
    fig.suptitle("rerankd soak: MiniLM-L6-size cross-encoder, ONNX fp32, 2x saturating load")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--calibrate-seconds", type=float, default=60.0)
    parser.add_argument("--load", type=float, default=2.0, help="multiple of the saturating rate")
    parser.add_argument("--out", type=Path, default=None, help="folder for json + png")
    args = parser.parse_args()
    results = args.out / "soak.json" if args.out else RESULTS
    figure = args.out / "soak.png" if args.out else FIGURE
    model = model_dir("minilm-l6")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = WORK / "logs" / "soak-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    server_args = ["--max-queue-tokens", "200000", "--request-timeout", "30"]
    process = start_server(model, port, log, server_args)
    try:
        wait_healthy(url, process)
        mix = Mix()

        async def run() -> tuple[float, list[Window]]:
            async with httpx.AsyncClient(base_url=url, timeout=120) as client:
                capacity = await calibrate(client, mix, args.calibrate_seconds)
            print(f"saturating load: {capacity:.2f} requests/s", flush=True)
            seconds = args.minutes * 60
            return capacity, await soak(url, process.pid, args.load * capacity, seconds, mix)

        capacity, windows = asyncio.run(run())
    finally:
        if process.poll() is None:
            os.killpg(os.getpgid(process.pid), signal.SIGTERM)
            process.wait(timeout=60)
    summary = verdicts(windows, args.minutes * 60)
    report = {
        "machine": describe(),
        "note": "the 2-core machine was shared with other work during the run",
        "model": "minilm-l6 (ms-marco-MiniLM-L6 shape), ONNX fp32",
        "server_args": server_args,
        "saturating_rps": round(capacity, 2),
        "offered_rps": round(args.load * capacity, 2),
        "minutes": args.minutes,
        "verdicts": summary,
        "windows": [w.summary() for w in windows],
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    plot(windows, figure)
    print(json.dumps(summary, indent=1))
    print(f"wrote {results} and {figure}")


if __name__ == "__main__":
    main()
