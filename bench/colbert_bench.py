"""ColBERT (late interaction) throughput vs a cross-encoder of the same size, 2 threads.

Pairs per second for one request of 32 documents of 20-400 words (seeded), each model served
by its own rerankd process (torch, float32, 2 threads):

- cross-encoder: the MiniLM-L6 fixture (BERT, hidden 384, 6 layers); a new query each round,
  so its pair-score cache never answers;
- ColBERT cold: a ColBERT of the same encoder shape (PyLate format, 128-dim projection,
  random weights) on 32 documents new to the server: the query and every document run;
- ColBERT warm: the same 32 documents with a new query: the token-vector cache answers every
  document and only the query (32 tokens) runs.

    python -m bench.colbert_bench [--rounds 3] [--documents 32]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import httpx

from bench import machine
from bench.fixtures import WORK, model_dir
from bench.servers import MAIN_PYTHON, THREADS, System, serve

RESULTS = Path(__file__).resolve().parent / "results"
WORDS = (
    "the a of to and in is for on with as by at from that this be are was it an or which "
    "model rank query passage document search vector token cache server request score fox "
    "river city capital country music history science energy water market policy health "
    "network language system data learning retrieval index memory speed quality paris france"
).split()


def _documents(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 400))) + "." for _ in range(count)
    ]


def _colbert() -> Path:
    from rerankd.devtools.synthetic_colbert import build_colbert

    out = WORK / "models" / "colbert-minilm-l6-random"
    if not (out / "1_Dense" / "model.safetensors").is_file():
        out.mkdir(parents=True, exist_ok=True)
        build_colbert(
            out, hidden_size=384, layers=6, heads=12, intermediate_size=1536, embedding_size=128
        )
    return out


def _rerankd(model: Path, port: int) -> list[str]:
    return [
        str(MAIN_PYTHON), "-m", "rerankd", "serve", "--model", str(model),
        "--port", str(port), "--threads", str(THREADS), "--log-level", "warning",
    ]  # fmt: skip


def _request(url: str, query: str, documents: list[str]) -> float:
    body = {"query": query, "documents": documents}
    started = time.perf_counter()
    response = httpx.post(url + "/rerank", json=body, timeout=600, trust_env=False)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--documents", type=int, default=32)
    args = parser.parse_args(argv)
    system = System("rerankd", "native", _rerankd)
    cross: list[float] = []
    cold: list[float] = []
    warm: list[float] = []
    with serve(system, model_dir("minilm-l6")) as server:
        _request(server.url, "warm up", _documents(999, 2))
        for round_ in range(args.rounds):
            cross.append(
                _request(server.url, f"query {round_}", _documents(round_, args.documents))
            )
    with serve(system, _colbert()) as server:
        _request(server.url, "warm up", _documents(999, 2))
        for round_ in range(args.rounds):
            documents = _documents(round_, args.documents)
            cold.append(_request(server.url, f"query {round_}", documents))
            warm.append(_request(server.url, f"another query {round_}", documents))

    def rate(times: list[float]) -> float:
        return round(args.documents / statistics.median(times), 2)

    result = {
        "benchmark": "colbert_bench",
        "machine": machine.describe(),
        "models": {
            "cross_encoder": "minilm-l6 fixture (BERT 384x6, random weights)",
            "colbert": "BERT 384x6 + Dense 384->128, PyLate format, random weights",
        },
        "documents_per_request": args.documents,
        "words_per_document": "20-400 (seeded)",
        "threads": THREADS,
        "rounds": args.rounds,
        "pairs_per_second": {
            "cross_encoder": rate(cross),
            "colbert_cold": rate(cold),
            "colbert_warm_cache": rate(warm),
        },
        "seconds": {"cross_encoder": cross, "colbert_cold": cold, "colbert_warm_cache": warm},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "colbert_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result["pairs_per_second"], sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
