"""Issue 4's benchmark: the server against the engine alone, on the same pairs, in one run.

For each concurrency (1, 4, 16 clients, 32 passages per request) the server's pairs/s is set
against the engine scoring all the same pairs in one in-process call (length-sorted batches
under the same token budget: the best the engine can do). At concurrency 1, a request's
latency is set against the engine's time for that request's pairs. A repeated request is
timed against a server with its score cache on.

    python -m bench.serving_bench [--model minilm-l6] [--backend onnx] [--dtype float32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np

from bench import fixtures, loadgen, servers
from bench.workload import Request, make_requests
from rerankd.batching import run_sorted
from rerankd.engine import EngineOptions, LongDocPolicy
from rerankd.engine.engine import load_engine

RESULTS = Path(__file__).resolve().parent / "results"


def engine_pairs_per_s(
    engine, requests: list[Request], max_batch_tokens: int
) -> tuple[float, list[float]]:
    """All requests' pairs in one call, and each request alone (seconds), in-process."""

    def score(batch: list[Request]) -> None:
        sequences = [
            s for r in batch for s in engine.plan(r.query, r.documents, LongDocPolicy()).sequences
        ]
        run_sorted(engine.run, sequences, max_batch_tokens)

    score(requests[:2])  # warm up
    started = time.perf_counter()
    score(requests)
    together = time.perf_counter() - started
    alone = []
    for request in requests[:8]:
        started = time.perf_counter()
        score([request])
        alone.append(time.perf_counter() - started)
    return sum(len(r.documents) for r in requests) / together, alone


def cache_hit_latency(url: str, request: Request, repeats: int = 200) -> dict[str, float]:
    body = {"query": request.query, "documents": request.documents, "return_documents": False}
    with httpx.Client(base_url=url, timeout=60, trust_env=False) as client:
        client.post("/rerank", json=body).raise_for_status()  # fills the cache
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            reply = client.post("/rerank", json=body)
            times.append(time.perf_counter() - started)
            assert reply.json()["usage"]["cached"] == len(request.documents)
    return {
        "p50_ms": 1000 * statistics.median(times),
        "p95_ms": 1000 * float(np.percentile(times, 95)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6", choices=sorted(fixtures.RECIPES))
    parser.add_argument("--backend", default="onnx")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--requests", type=int, default=24)
    args = parser.parse_args()

    model = fixtures.model_dir(args.model)
    requests = make_requests(args.requests)
    options = EngineOptions(
        backend=args.backend,
        dtype=args.dtype,
        threads=servers.THREADS,
        cache_dir=fixtures.WORK / "cache",
    )
    engine = load_engine(str(model), options)
    engine_rate, engine_alone = engine_pairs_per_s(engine, requests, engine.batch_tokens)
    del engine
    print(
        f"engine alone: {engine_rate:.1f} pairs/s; one request alone: {statistics.median(engine_alone) * 1000:.0f} ms"
    )

    system = servers.SYSTEMS[
        f"rerankd-{args.backend}-{'fp32' if args.dtype == 'float32' else args.dtype}"
    ]
    rows = []
    with servers.serve(system, model) as server:
        dialect = loadgen.DIALECTS["rerankd"]
        asyncio.run(
            loadgen.drive(
                server.url, dialect, requests[:2], concurrency=1, max_requests=2, max_seconds=60
            )
        )
        for concurrency in (1, 4, 16):
            count = max(len(requests), 2 * concurrency)
            result = asyncio.run(
                loadgen.drive(
                    server.url,
                    dialect,
                    requests,
                    concurrency=concurrency,
                    max_requests=count,
                    max_seconds=300,
                    server_pid=server.process.pid,
                )
            )
            row = {**result.summary(), "engine_pairs_per_s": round(engine_rate, 1)}
            row["share_of_engine"] = round(result.pairs_per_s / engine_rate, 3)
            if concurrency == 1:
                row["engine_request_ms"] = round(1000 * statistics.median(engine_alone), 1)
                row["latency_over_engine"] = round(
                    result.percentile(50) / statistics.median(engine_alone), 3
                )
            rows.append(row)
            print(json.dumps(row))
    with servers.serve(_with_cache(system), model) as server:
        cache = cache_hit_latency(server.url, requests[0])
    print(f"cache hit: p50 {cache['p50_ms']:.2f} ms, p95 {cache['p95_ms']:.2f} ms")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"serving_bench-{args.model}-{args.backend}-{args.dtype}.json"
    out.write_text(
        json.dumps(
            {
                "model": args.model,
                "backend": args.backend,
                "dtype": args.dtype,
                "rows": rows,
                "cache_hit": cache,
            },
            indent=1,
        )
    )
    print(f"wrote {out}")


def _with_cache(system: servers.System) -> servers.System:
    """The same server with its score cache on (the benchmark systems turn it off)."""

    def command(model_dir: Path, port: int) -> list[str]:
        argv = system.command(model_dir, port)
        index = argv.index("--cache-entries")
        return argv[:index] + argv[index + 2 :]

    return replace(system, name=system.name + "-cached", command=command)


if __name__ == "__main__":
    main()
