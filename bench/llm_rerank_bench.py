"""Qwen3-Reranker-0.6B-shape model: rerankd's modes against the model card's transformers loop.

The model has the real shape (28 layers, hidden 1024, 16 query / 8 key-value heads, MLP 3072,
151,669-row tied LM head) and seeded random weights; its tokenizer is the test suite's
Qwen-style byte-level BPE trained on the workload's text (a few thousand entries, so words
take about as many tokens as with the real vocabulary). Requests are the RAG workload of
`bench/workload.py`: one query and 8 or 32 passages of 20-400 words.

Each mode runs in its own child process (so each has its own peak RSS and none inherits
another's memory), one after the other, on the same requests:

- `reference`: the model card's loop: left padding, batches of 32 in the order given, the
  full-vocabulary LM head, `logits[:, -1, :]`, log-softmax over (no, yes).
- `rerankd-torch`, `rerankd-onnx-fp32`, `rerankd-onnx-int8`: `rerankd.Reranker`.

    python -m bench.llm_rerank_bench                      # CPU, 2 threads, every mode
    python -m bench.llm_rerank_bench --device cuda --dtype bfloat16   # torch modes on a GPU
    python -m bench.llm_rerank_bench --layers 2           # a quick smoke run of the harness
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.workload import Request, WorkloadSpec, make_requests

WORK = Path(__file__).resolve().parent / ".work"
RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("reference", "rerankd-torch", "rerankd-onnx-fp32", "rerankd-onnx-int8")
CPU_ONLY = ("rerankd-onnx-fp32", "rerankd-onnx-int8")
# Qwen3-Reranker-0.6B's config, less the weights.
SHAPE: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151669,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000.0,
    "initializer_range": 0.02,
}
MAX_LENGTH = 8192  # the model card's (and the family's default); no workload pair reaches it
REFERENCE_BATCH = 32
PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def requests(documents: list[int], per_size: int) -> list[Request]:
    out: list[Request] = []
    for count in documents:
        out += make_requests(per_size, WorkloadSpec(documents=count, seed=count))
    return out


def model_dir(layers: int) -> Path:
    """Build the model once per shape; later runs reuse it (several GB of fp32 weights)."""
    shape = {**SHAPE, "num_hidden_layers": layers}
    out = WORK / "models" / f"qwen3-reranker-0.6b-shape-{layers}l"
    recipe = out / "recipe.json"
    if recipe.is_file() and json.loads(recipe.read_text()) == shape:
        return out
    from rerankd.devtools.synthetic_llm import build_qwen3_reranker

    corpus = [text for r in make_requests(40, WorkloadSpec(seed=12345)) for text in r.documents]
    print(f"building {out.name} (random weights) ...", flush=True)
    build_qwen3_reranker(out, tokenizer_corpus=corpus, tokenizer_vocab=8000, **shape)
    recipe.write_text(json.dumps(shape))
    return out


# One mode, in a child process -------------------------------------------------------------


def reference_scorer(path: Path, device: str, dtype: str, threads: int) -> Any:
    """The model card's transformers code, as published (batch 32, full-vocabulary head)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    model = model.to(device).eval()
    token_false_id = tokenizer.convert_tokens_to_ids("no")
    token_true_id = tokenizer.convert_tokens_to_ids("yes")
    prefix_tokens = tokenizer.encode(PREFIX, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(SUFFIX, add_special_tokens=False)

    def score(request: Request) -> np.ndarray:
        texts = [
            f"<Instruct>: {INSTRUCTION}\n<Query>: {request.query}\n<Document>: {doc}"
            for doc in request.documents
        ]
        raw: list[float] = []
        for start in range(0, len(texts), REFERENCE_BATCH):
            inputs = tokenizer(
                texts[start : start + REFERENCE_BATCH],
                padding=False,
                truncation="longest_first",
                return_attention_mask=False,
                max_length=MAX_LENGTH - len(prefix_tokens) - len(suffix_tokens),
            )
            for i, ele in enumerate(inputs["input_ids"]):
                inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
            inputs = tokenizer.pad(inputs, padding=True, return_tensors="pt")
            inputs = {key: value.to(device) for key, value in inputs.items()}
            with torch.no_grad():
                logits = model(**inputs).logits[:, -1, :]
            pair = torch.stack([logits[:, token_false_id], logits[:, token_true_id]], dim=1)
            log_probs = torch.nn.functional.log_softmax(pair.float(), dim=1)
            # P(yes) is what the card returns; its logit keeps float precision for Spearman.
            raw += (log_probs[:, 1] - log_probs[:, 0]).tolist()
        return np.asarray(raw)

    return score


def rerankd_scorer(path: Path, mode: str, device: str, dtype: str, threads: int) -> Any:
    from rerankd import Reranker

    backend, dtype = {
        "rerankd-torch": ("torch", dtype),
        "rerankd-onnx-fp32": ("onnx", "float32"),
        "rerankd-onnx-int8": ("onnx", "int8"),
    }[mode]
    reranker = Reranker(
        path, backend=backend, dtype=dtype, device=device, threads=threads, cache_dir=WORK / "cache"
    )
    return lambda request: reranker.score(request.pairs(), raw=True)


def run_mode(args: argparse.Namespace) -> dict[str, Any]:
    """Load one mode, warm it up, time it over every request; report in JSON on stdout."""
    path = model_dir(args.layers)
    started = time.perf_counter()
    if args.child == "reference":
        scorer = reference_scorer(path, args.device, args.dtype, args.threads)
    else:
        scorer = rerankd_scorer(path, args.child, args.device, args.dtype, args.threads)
    load_seconds = time.perf_counter() - started
    loaded_rss = _rss_now()
    scorer(make_requests(1, WorkloadSpec(documents=4, max_words=40, seed=7))[0])
    seconds: dict[str, float] = {}
    pairs: dict[str, int] = {}
    scores: list[float] = []
    for request in requests(args.documents, args.requests):
        size = str(len(request.documents))
        _synchronize(args.device)
        tic = time.perf_counter()
        scores += [float(s) for s in scorer(request)]
        _synchronize(args.device)
        seconds[size] = seconds.get(size, 0.0) + time.perf_counter() - tic
        pairs[size] = pairs.get(size, 0) + len(request.documents)
    return {
        "mode": args.child,
        "load_seconds": round(load_seconds, 1),
        "rss_after_load_mib": round(loaded_rss / 2**20),
        "peak_rss_mib": round(_peak_rss() / 2**20),
        "seconds": {size: round(value, 3) for size, value in seconds.items()},
        "pairs": pairs,
        "scores": scores,
    }


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _rss_now() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    """This process's own peak (VmHWM): unlike ru_maxrss, not inherited from the parent."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# The parent: every mode, then the table ------------------------------------------------------


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    from bench import machine

    model_dir(args.layers)  # build before any timing
    modes = [m for m in args.modes if args.device == "cpu" or m not in CPU_ONLY]
    # Rows are kept per machine run, so the modes can be run in several invocations (each
    # under a time limit) and summarized together.
    rows_dir = WORK / "rows" / f"{args.device}-{args.dtype}-{args.layers}l"
    rows_dir.mkdir(parents=True, exist_ok=True)
    for mode in modes:
        print(f"running {mode} ...", flush=True)
        command = [sys.executable, "-m", "bench.llm_rerank_bench", "--child", mode]
        command += ["--device", args.device, "--dtype", args.dtype, "--threads", str(args.threads)]
        command += ["--layers", str(args.layers), "--requests", str(args.requests)]
        command += ["--documents", *map(str, args.documents)]
        if mode in CPU_ONLY:  # export and quantize outside the timed child's own memory
            subprocess.run([*command, "--prepare"], check=True)
        done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
        (rows_dir / f"{mode}.json").write_text(done.stdout.strip().splitlines()[-1])
    rows = [
        json.loads((rows_dir / f"{m}.json").read_text())
        for m in MODES
        if (rows_dir / f"{m}.json").is_file()
    ]
    report = {
        "machine": machine.describe(),
        "device": args.device,
        "dtype": args.dtype,
        "threads": args.threads,
        "layers": args.layers,
        "requests_per_size": args.requests,
        "modes": _summarize(rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_table(report)
    return report


def _summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from scipy.stats import spearmanr

    for row in rows:
        row["pairs_per_s"] = {
            size: round(row["pairs"][size] / seconds, 2) for size, seconds in row["seconds"].items()
        }
    reference = next((r for r in rows if r["mode"] == "reference"), None)
    out = []
    for row in rows:
        entry = {k: v for k, v in row.items() if k != "scores"}
        if reference is not None:
            entry["speedup_vs_reference"] = {
                size: round(rate / reference["pairs_per_s"][size], 2)
                for size, rate in row["pairs_per_s"].items()
            }
            rho = spearmanr(row["scores"], reference["scores"]).statistic
            entry["spearman_vs_reference"] = round(float(rho), 4)
        out.append(entry)
    return out


def print_table(report: dict[str, Any]) -> None:
    print(
        f"{report['machine']['cpu']}, {report['threads']} threads, device {report['device']} "
        f"({report['dtype']} for torch), {report['layers']} layers"
    )
    print(f"{'mode':<20} {'docs':>4} {'pairs/s':>8} {'vs ref':>7} {'rho':>7} {'peak RSS':>9}")
    for row in report["modes"]:
        for size, rate in row["pairs_per_s"].items():
            speedup = row.get("speedup_vs_reference", {}).get(size, float("nan"))
            print(
                f"{row['mode']:<20} {size:>4} {rate:>8.2f} {speedup:>6.2f}x "
                f"{row.get('spearman_vs_reference', float('nan')):>7.4f} "
                f"{row['peak_rss_mib']:>6} MiB"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--dtype",
        default="float32",
        help="torch modes' dtype: float32, or float16/bfloat16 on cuda",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=SHAPE["num_hidden_layers"])
    parser.add_argument("--documents", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--requests", type=int, default=1, help="requests per document count")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--out", type=Path, default=RESULTS / "llm_rerank_bench.json")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "cpu" and args.dtype != "float32":
        parser.error("float16/bfloat16 are for --device cuda; CPU runs float32 (and ONNX int8)")
    if args.child and args.prepare:
        rerankd_scorer(model_dir(args.layers), args.child, args.device, args.dtype, args.threads)
    elif args.child:
        print(json.dumps(run_mode(args)))
    else:
        run_all(args)


if __name__ == "__main__":
    main()
