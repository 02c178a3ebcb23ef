"""Issue 23: what `return_spans` costs, in pairs/s, against plain reranking on the same server.

One `rerankd serve` (bench/servers.py, MiniLM-L6's shape from bench/fixtures.py, ONNX fp32 by
default) answers RAG-shaped requests (bench/workload.py: one query, 32 passages of 20-400
words, a third Chinese), one at a time. Each request is sent plain and with `return_spans`
back to back, the order alternating, so a shared machine's noise hits both alike; the score
cache is off on the benchmark servers, so every request runs the model. Reported: pairs/s of
each (documents / seconds), their ratio, span windows and tokens per request.

    python -m bench.spans_bench                 # 12 requests
    python -m bench.spans_bench --requests 4 --system rerankd-torch-fp32

Writes bench/results/spans_bench.json. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench import machine
from bench.fixtures import model_dir
from bench.servers import SYSTEMS, serve
from bench.workload import WorkloadSpec, make_requests

RESULTS = Path(__file__).resolve().parent / "results" / "spans_bench.json"
WARMUP = 2


def _timed(http: httpx.Client, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = http.post("/rerank", json=body)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    answer = response.json()
    if len(answer["results"]) != len(body["documents"]):
        raise RuntimeError("a document was not scored")
    if body.get("return_spans") and not all("spans" in r for r in answer["results"]):
        raise RuntimeError("spans were asked for and not returned")
    return seconds, answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--system", default="rerankd-onnx-fp32")
    args = parser.parse_args()
    spec = WorkloadSpec(seed=23)
    requests = make_requests(args.requests + WARMUP, spec)
    seconds: dict[str, list[float]] = {"plain": [], "spans": []}
    tokens: dict[str, list[int]] = {"plain": [], "spans": []}
    windows: list[int] = []
    with (
        serve(SYSTEMS[args.system], model_dir(args.model)) as server,
        httpx.Client(base_url=server.url, timeout=600, trust_env=False) as http,
    ):
        for n, request in enumerate(requests):
            plain = {"query": request.query, "documents": request.documents}
            bodies = {"plain": plain, "spans": {**plain, "return_spans": True}}
            order = ["plain", "spans"] if n % 2 else ["spans", "plain"]
            for mode in order:
                took, answer = _timed(http, bodies[mode])
                if n < WARMUP:
                    continue
                seconds[mode].append(took)
                tokens[mode].append(int(answer["usage"]["tokens"]))
                if mode == "spans":
                    windows.append(int(answer["usage"]["span_windows"]))
            print(f"request {n}: " + ", ".join(f"{m} {seconds[m][-1]:.2f}s" for m in seconds)
                  if n >= WARMUP else f"warm-up {n}")  # fmt: skip
    pairs = args.requests * spec.documents
    rate = {mode: pairs / sum(values) for mode, values in seconds.items()}
    result = {
        "machine": machine.describe(),
        "system": args.system,
        "model": args.model,
        "requests": args.requests,
        "documents_per_request": spec.documents,
        "words_per_document": [spec.min_words, spec.max_words],
        "pairs_per_second": {mode: round(value, 1) for mode, value in rate.items()},
        "spans_relative_to_plain": round(rate["spans"] / rate["plain"], 3),
        "p50_request_s": {m: round(statistics.median(v), 3) for m, v in seconds.items()},
        "span_windows_per_request": round(statistics.mean(windows), 1),
        "tokens_per_request": {m: round(statistics.mean(v)) for m, v in tokens.items()},
        "note": "concurrency 1, score cache off; pairs are the request's documents (span "
        "windows are extra work, not extra pairs)",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
