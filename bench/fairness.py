"""Issue 11's scheduler benchmark: a small interactive request's latency under bulk load.

One rerankd server (ONNX fp32, 2 threads, the MiniLM-L6 fixture). A *small* request is 1 query
x 8 passages of 20-60 words, sent by one client every `--small-interval` seconds (an
interactive user, not a flood); a *bulk* request is 1 query x 128 passages of 150-350 words,
sent back to back by each of two clients. The run measures small requests alone, then keeps
the two bulk clients running throughout and alternates windows without and with the small
client (bulk alone, mixed, bulk alone, mixed, ...), so that load from other work on a shared
machine drifts over both alike; then small requests alone again.

Bulk pairs/s are read from the server's own `rerankd_pairs_scored` counter over each window
(minus the small requests' pairs), so nothing waits for a bulk request to drain. `--ref main`
runs the same against a git ref's rerankd (extracted under bench/.work): today's scheduler,
measured in the same run.

    python -m bench.fairness [--seconds 20] [--rounds 2] [--ref main] [--batch-tokens 512 2048]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import numpy as np

from bench import cpuload, fixtures, servers
from bench.workload import Request, WorkloadSpec, make_requests

RESULTS = Path(__file__).resolve().parent / "results"
SMALL = WorkloadSpec(documents=8, min_words=20, max_words=60, seed=11)
BULK = WorkloadSpec(documents=128, min_words=150, max_words=350, seed=12)
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Window:
    """What one stretch of `--seconds` measured."""

    bulk_pairs: float = 0.0
    small_pairs: float = 0.0
    seconds: float = 0.0
    padded: float = 0.0
    real: float = 0.0
    other_cpu: float = 0.0  # cores other processes took meanwhile (the machine is shared)

    def add(self, other: Window) -> None:
        weight = self.seconds + other.seconds
        self.other_cpu = (self.other_cpu * self.seconds + other.other_cpu * other.seconds) / weight
        self.bulk_pairs += other.bulk_pairs
        self.small_pairs += other.small_pairs
        self.seconds += other.seconds
        self.padded += other.padded
        self.real += other.real


def _percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else float("nan")


def _parse_counters(text: str) -> dict[str, float]:
    wanted = {
        "rerankd_pairs_scored_total": "pairs",
        "rerankd_batch_padded_tokens_sum": "padded",
        "rerankd_batch_real_tokens_total": "real",
    }
    found = dict.fromkeys(wanted.values(), 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            found[wanted[name]] += float(line.rsplit(" ", 1)[1])
    return found


def _body(request: Request) -> dict:
    return {"query": request.query, "documents": request.documents, "return_documents": False}


class Drive:
    """The clients of one server: two persistent bulk clients, one small client toggled on."""

    def __init__(self, http: httpx.AsyncClient, server_pid: int, interval: float) -> None:
        self.http = http
        self.pid = server_pid
        self.interval = interval
        self.small_requests = make_requests(16, SMALL)
        self.bulk_requests = make_requests(8, BULK)
        self.small_latencies: dict[str, list[float]] = {"alone": [], "mixed": []}
        self.small_pairs_done = 0
        self.small_until = 0.0

    async def bulk_client(self, index: int) -> None:
        turn = index
        while True:
            request = self.bulk_requests[turn % len(self.bulk_requests)]
            turn += 2
            (await self.http.post("/rerank", json=_body(request))).raise_for_status()

    async def small_client(self, phase: str) -> None:
        turn = 0
        while time.perf_counter() < self.small_until:
            sent = time.perf_counter()
            request = self.small_requests[turn % len(self.small_requests)]
            turn += 1
            (await self.http.post("/rerank", json=_body(request))).raise_for_status()
            self.small_latencies[phase].append(time.perf_counter() - sent)
            self.small_pairs_done += SMALL.documents
            await asyncio.sleep(max(0.0, sent + self.interval - time.perf_counter()))

    async def window(self, seconds: float, small: str | None) -> Window:
        """Counters over `seconds`; with `small`, the small client runs meanwhile."""
        before = _parse_counters((await self.http.get("/metrics")).text)
        small_before = self.small_pairs_done
        load = cpuload.LoadWindow(pids=(self.pid, os.getpid())).start()
        started = time.perf_counter()
        self.small_until = started + seconds
        task = asyncio.ensure_future(self.small_client(small)) if small else None
        await asyncio.sleep(seconds)
        after = _parse_counters((await self.http.get("/metrics")).text)
        elapsed = time.perf_counter() - started
        small_pairs = self.small_pairs_done - small_before
        load.stop()
        if task is not None:
            await task  # its last request ends in the next window: counted there, by completion
        return Window(
            after["pairs"] - before["pairs"] - small_pairs,
            small_pairs,
            elapsed,
            after["padded"] - before["padded"],
            after["real"] - before["real"],
            load.foreign_cores,
        )


async def _measure(url: str, server_pid: int, args: argparse.Namespace) -> dict[str, object]:
    """Small alone; then bulk alone and mixed windows alternating; then small alone again."""
    async with httpx.AsyncClient(base_url=url, timeout=600.0, trust_env=False) as http:
        drive = Drive(http, server_pid, args.small_interval)
        await drive.window(args.small_seconds, "alone")
        bulk = [asyncio.ensure_future(drive.bulk_client(i)) for i in range(2)]
        await asyncio.sleep(args.settle)  # the bulk queue fills before the first window
        alone, mixed = Window(), Window()
        for _ in range(args.rounds):
            alone.add(await drive.window(args.seconds, None))
            mixed.add(await drive.window(args.seconds, "mixed"))
        for task in bulk:
            task.cancel()  # the server drops a cancelled request's queued work
        await asyncio.gather(*bulk, return_exceptions=True)
        await asyncio.sleep(args.settle)
        await drive.window(args.small_seconds, "alone")
    small_alone, small_mixed = drive.small_latencies["alone"], drive.small_latencies["mixed"]
    return {
        "small_alone": {
            "requests": len(small_alone),
            "p50_s": _percentile(small_alone, 50),
            "p95_s": _percentile(small_alone, 95),
        },
        "small_mixed": {
            "requests": len(small_mixed),
            "p50_s": _percentile(small_mixed, 50),
            "p95_s": _percentile(small_mixed, 95),
        },
        "bulk_alone": _window_summary(alone),
        "mixed": _window_summary(mixed),
        "ratios": {
            "small_p95_mixed_over_p50_alone": round(
                _percentile(small_mixed, 95) / _percentile(small_alone, 50), 2
            ),
            "bulk_mixed_over_alone": round(
                (mixed.bulk_pairs / mixed.seconds) / (alone.bulk_pairs / alone.seconds), 3
            ),
            # All tokens run (bulk and small): what the scheduler itself costs, the small
            # requests' own work aside.
            "tokens_mixed_over_alone": round(
                (mixed.real / mixed.seconds) / (alone.real / alone.seconds), 3
            ),
        },
    }


def _window_summary(window: Window) -> dict[str, float]:
    return {
        "bulk_pairs_per_s": round(window.bulk_pairs / window.seconds, 2),
        "small_pairs_per_s": round(window.small_pairs / window.seconds, 2),
        "real_tokens_per_s": round(window.real / window.seconds, 1),
        "padding_waste": round(window.padded / window.real, 3) if window.real else 0.0,
        "seconds": round(window.seconds, 1),
        "other_cpu_cores": round(window.other_cpu, 2),
    }


def _ref_tree(ref: str) -> Path:
    """`ref`'s rerankd package, extracted under bench/.work, for a same-run baseline."""
    sha = subprocess.check_output(["git", "rev-parse", "--short", ref], cwd=REPO, text=True)
    out = fixtures.WORK / f"ref-{sha.strip()}"
    if not (out / "rerankd").is_dir():
        out.mkdir(parents=True, exist_ok=True)
        archive = subprocess.check_output(["git", "archive", ref, "rerankd"], cwd=REPO)
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def _system(batch_tokens: int, tree: Path | None) -> servers.System:
    base = servers.SYSTEMS["rerankd-onnx-fp32"]

    def command(model_dir: Path, port: int) -> list[str]:
        return [*base.command(model_dir, port), "--max-batch-tokens", str(batch_tokens)]

    name = f"rerankd-onnx-fp32-{batch_tokens}" + ("-ref" if tree else "")
    return replace(base, name=name, command=command, cwd=lambda model_dir: tree)


def run(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    model_dir = fixtures.model_dir(args.model)
    configs: list[tuple[str, servers.System]] = []
    for tokens in args.batch_tokens:
        configs.append((f"this tree, {tokens} tokens", _system(tokens, None)))
        if args.ref:
            configs.append((f"{args.ref}, {tokens} tokens", _system(tokens, _ref_tree(args.ref))))
    results: dict[str, dict[str, object]] = {}
    for label, system in configs:
        with servers.serve(system, model_dir) as server:
            with httpx.Client(base_url=server.url, timeout=120, trust_env=False) as http:
                for request in make_requests(2, SMALL):  # warm-up
                    http.post("/rerank", json=_body(request)).raise_for_status()
            results[label] = asyncio.run(_measure(server.url, server.process.pid, args))
        print(label, json.dumps(results[label]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6", choices=sorted(fixtures.RECIPES))
    parser.add_argument("--seconds", type=float, default=20.0, help="one bulk/mixed window")
    parser.add_argument("--rounds", type=int, default=2, help="bulk-alone/mixed window pairs")
    parser.add_argument("--small-seconds", type=float, default=8.0, help="each small-alone window")
    parser.add_argument("--small-interval", type=float, default=1.0)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before the first window")
    parser.add_argument("--batch-tokens", type=int, nargs="+", default=[512])  # ONNX default
    parser.add_argument("--ref", help="also run this git ref's rerankd (e.g. main)")
    args = parser.parse_args()
    results = run(args)
    for label, result in results.items():
        print(label, json.dumps(result["ratios"]))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "fairness.json"
    out.write_text(
        json.dumps({"args": vars(args), "results": results}, indent=2) + "\n", encoding="utf-8"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
