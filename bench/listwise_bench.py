"""jina-reranker-v3-shape model: rerankd's listwise path against the model card's loop.

The model has the real shape (Qwen3-0.6B: 28 layers, hidden 1024, 16 query / 8 key-value
heads, MLP 3072, 151,936-row embedding; the projector 1024 -> 512 -> 512) and seeded random
weights; its tokenizer is the test suite's Qwen-style BPE trained on the workload's text.
Requests are `bench/workload.py`'s RAG workload (one query, N passages), kept short by default
so a CPU run takes a few minutes: a listwise model reads every passage of a request in one
prompt, so one request is one long sequence.

Modes run one after the other in this process, on the same requests, each model freed before
the next loads:

- `reference`: the card's `JinaForRanking.rerank` (tests/test_listwise_reference.py writes it
  out): Qwen3ForCausalLM with an identity LM head, all hidden states kept, one prompt per block.
- `rerankd-torch` (and `rerankd-onnx` with `--onnx`): `rerankd.Reranker`.

    python -m bench.listwise_bench                   # CPU, 2 threads, 0.6B shape
    python -m bench.listwise_bench --layers 2        # a quick smoke run of the harness
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.workload import Request, WorkloadSpec, make_requests

WORK = Path(__file__).resolve().parent / ".work"
RESULTS = Path(__file__).resolve().parent / "results"
SHAPE: dict[str, Any] = {  # jina-reranker-v3's config.json, less the weights
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "max_position_embeddings": 131072,
    "rope_theta": 1000000.0,
    "initializer_range": 0.02,
}
MAX_LENGTH = 131072  # the card's tokenizer model_max_length (the family's default)


def model_dir(layers: int) -> Path:
    """Build the model once per shape; later runs reuse it (about 2.4 GB of fp32 weights)."""
    shape = {**SHAPE, "num_hidden_layers": layers}
    out = WORK / "models" / f"jina-reranker-v3-shape-{layers}l"
    recipe = out / "recipe.json"
    if recipe.is_file() and json.loads(recipe.read_text()) == shape:
        return out
    from rerankd.devtools.synthetic_listwise import build_jina_reranker_v3

    corpus = [text for r in make_requests(40, WorkloadSpec(seed=12345)) for text in r.documents]
    print(f"building {out.name} (random weights) ...", flush=True)
    build_jina_reranker_v3(out, tokenizer_corpus=corpus, tokenizer_vocab=8000, **shape)
    recipe.write_text(json.dumps(shape))
    return out


def reference_scorer(path: Path) -> Callable[[Request], np.ndarray]:
    from tests.test_listwise_reference import CardModel

    card = CardModel(path, MAX_LENGTH)
    return lambda request: card.rerank(request.query, request.documents, None)


def rerankd_scorer(path: Path, backend: str, threads: int) -> Callable[[Request], np.ndarray]:
    from rerankd import Reranker

    reranker = Reranker(path, backend=backend, threads=threads, cache_dir=WORK / "cache")  # type: ignore[arg-type]
    return lambda request: reranker.score(request.pairs(), raw=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from bench import machine
    from bench.cpuload import LoadWindow

    torch.set_num_threads(args.threads)
    path = model_dir(args.layers)
    spec = WorkloadSpec(documents=args.documents, min_words=20, max_words=args.max_words, seed=3)
    requests = make_requests(args.requests, spec)
    modes = ["reference", "rerankd-torch"] + (["rerankd-onnx"] if args.onnx else [])
    rows: list[dict[str, Any]] = []
    scores: dict[str, np.ndarray] = {}
    for mode in modes:
        print(f"running {mode} ...", flush=True)
        started = time.perf_counter()
        if mode == "reference":
            scorer = reference_scorer(path)
        else:
            scorer = rerankd_scorer(path, mode.removeprefix("rerankd-"), args.threads)
        load = time.perf_counter() - started
        scorer(make_requests(1, WorkloadSpec(documents=3, max_words=30, seed=7))[0])  # warm up
        window = LoadWindow().start()
        tic = time.perf_counter()
        scores[mode] = np.concatenate([scorer(r) for r in requests])
        seconds = time.perf_counter() - tic
        foreign = window.stop().foreign_cores
        rows.append(
            {
                "mode": mode,
                "load_seconds": round(load, 1),
                "seconds": round(seconds, 2),
                "documents_per_s": round(len(scores[mode]) / seconds, 2),
                "foreign_cores": round(foreign, 2),
            }
        )
        del scorer
        gc.collect()
    for row in rows:
        diff = np.abs(scores[row["mode"]] - scores["reference"]).max()
        row["max_abs_diff_vs_reference"] = float(diff)
        row["speedup_vs_reference"] = round(rows[0]["seconds"] / row["seconds"], 2)
    report = {
        "machine": machine.describe(),
        "threads": args.threads,
        "layers": args.layers,
        "requests": args.requests,
        "documents_per_request": args.documents,
        "words_per_document": [20, args.max_words],
        "modes": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["modes"], indent=2))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=SHAPE["num_hidden_layers"])
    parser.add_argument("--documents", type=int, default=16, help="passages per request")
    parser.add_argument("--max-words", type=int, default=80)
    parser.add_argument("--requests", type=int, default=2)
    parser.add_argument("--onnx", action="store_true", help="also rerankd's ONNX backend")
    parser.add_argument("--out", type=Path, default=RESULTS / "listwise_bench.json")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
