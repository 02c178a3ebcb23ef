"""Issue 10: what launching and terminating models costs, and what it does to a model beside.

1. Launch and terminate times of the MiniLM-size and XLM-R-base-size models on an idle server
   (`POST /v1/models` waiting until ready, `DELETE /v1/models/{uid}`), a few cycles each.
2. The first model (MiniLM-size) under a closed-loop load, with and without a second model
   (MiniLM-size) being launched, kept `--hold` seconds, terminated and rested `--hold` seconds
   over and over beside it, in alternating windows of the same length, so a shared machine's
   noise falls on both alike: p50/p99 latency, pairs/s, errors.

    python -m bench.registry_bench                     # 2 cycles, 2 x 2 windows of 20 s, hold 5 s
    python -m bench.registry_bench --cycles 3 --seconds 30 --concurrency 4

Writes bench/results/registry_bench.json. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx

from bench import machine
from bench.fixtures import model_dir
from bench.loadgen import DIALECTS, LoadResult, drive
from bench.servers import System, _rerankd, serve
from bench.workload import WorkloadSpec, make_requests

RESULTS = Path(__file__).resolve().parent / "results" / "registry_bench.json"
FIRST = "minilm-l6"
SECONDS_MODELS = {"minilm-l6": "second-minilm", "xlmr-base": "second-xlmr"}


def _system(data_dir: Path) -> System:
    base = _rerankd("torch", "float32")
    return System(
        "rerankd-registry",
        "rerankd",
        lambda model, port: [*base(model, port), "--data-dir", str(data_dir)],
    )


async def _register(http: httpx.AsyncClient, name: str, path: Path) -> None:
    spec = {"model_name": name, "model_uri": str(path), "type": "normal", "language": ["en"]}
    body = {"model": json.dumps(spec), "persist": False}
    (await http.post("/v1/model_registrations/rerank", json=body)).raise_for_status()


async def _cycle(http: httpx.AsyncClient, name: str) -> dict[str, float]:
    """One launch (until ready) and one terminate; wall seconds of each, and the load time."""
    started = time.perf_counter()
    launched = await http.post("/v1/models", json={"model_name": name, "model_type": "rerank"})
    launched.raise_for_status()
    launch_s = time.perf_counter() - started
    uid = launched.json()["model_uid"]
    load_s = (await http.get(f"/v1/models/{uid}")).json()["load_seconds"]
    started = time.perf_counter()
    (await http.delete(f"/v1/models/{uid}")).raise_for_status()
    return {"launch_s": launch_s, "load_s": load_s, "terminate_s": time.perf_counter() - started}


async def _churn(http: httpx.AsyncClient, name: str, stop: asyncio.Event, hold: float) -> int:
    """Launch, keep it `hold` seconds, terminate, wait `hold` seconds; until the window ends."""
    cycles = 0
    while not stop.is_set():
        launched = await http.post("/v1/models", json={"model_name": name, "model_type": "rerank"})
        launched.raise_for_status()
        await _pause(stop, hold)
        (await http.delete(f"/v1/models/{launched.json()['model_uid']}")).raise_for_status()
        cycles += 1
        await _pause(stop, hold)
    return cycles


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _window(url: str, requests: list, args: argparse.Namespace, churn: bool) -> dict:
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=900, trust_env=False) as http:
        churner = (
            asyncio.create_task(_churn(http, "second-minilm", stop, args.hold)) if churn else None
        )
        result: LoadResult = await drive(
            url,
            DIALECTS["rerankd"],
            requests,
            concurrency=args.concurrency,
            max_requests=10_000,
            max_seconds=args.seconds,
            model=FIRST,
        )
        stop.set()
        cycles = await churner if churner else 0
    return {**result.summary(), "churn": churn, "launch_terminate_cycles": cycles}


async def run(args: argparse.Namespace) -> dict:
    paths = {name: model_dir(name) for name in SECONDS_MODELS}
    requests = make_requests(64, replace(WorkloadSpec(), documents=args.documents))
    with tempfile.TemporaryDirectory() as data, serve(_system(Path(data)), paths[FIRST]) as server:
        url = server.url
        async with httpx.AsyncClient(base_url=url, timeout=900, trust_env=False) as http:
            for name, registered in SECONDS_MODELS.items():
                await _register(http, registered, paths[name])
            timings = {}
            for name, registered in SECONDS_MODELS.items():
                cycles = [await _cycle(http, registered) for _ in range(args.cycles)]
                timings[name] = {
                    key: round(statistics.median(c[key] for c in cycles), 3) for key in cycles[0]
                } | {"cycles": len(cycles)}
                print(name, timings[name], flush=True)
        windows = []
        for round_ in range(args.rounds):
            for churn in (False, True):
                window = await _window(url, requests, args, churn)
                windows.append(window)
                print(f"round {round_} churn={churn}", window, flush=True)
    return {
        "machine": machine.describe(),
        "settings": vars(args),
        "launch_terminate": timings,
        "windows": windows,
        "first_model": {
            label: _pooled([w for w in windows if w["churn"] is churn])
            for label, churn in (("steady", False), ("churn", True))
        },
    }


def _pooled(windows: list[dict]) -> dict[str, float]:
    """Medians over the windows of one kind (pairs/s, p50, p99), and the errors summed."""
    return {
        "pairs_per_s": round(statistics.median(w["pairs_per_s"] for w in windows), 2),
        "p50_s": round(statistics.median(w["p50_s"] for w in windows), 3),
        "p99_s": round(statistics.median(w["p99_s"] for w in windows), 3),
        "errors": sum(w["errors"] for w in windows),
        "launch_terminate_cycles": sum(w["launch_terminate_cycles"] for w in windows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=2, help="launch/terminate cycles per model")
    parser.add_argument("--rounds", type=int, default=2, help="steady + churn window pairs")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of one window")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--documents", type=int, default=8, help="passages per request")
    parser.add_argument(
        "--hold", type=float, default=5.0, help="churn: seconds the second model runs, and rests"
    )
    report = asyncio.run(run(parser.parse_args()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("launch_terminate", "first_model")}, indent=2))


if __name__ == "__main__":
    main()
