"""Shared prefix on and off, against the Qwen3-Reranker model card's loop (pairs per second).

The model is Qwen3-Reranker-0.6B's shape with random weights (bench/llm_rerank_bench.py builds
it; `--layers` keeps the full width and fewer of the 28 layers, so a run fits a shared CPU).
Requests: one query and 32 passages of 20-400 words (bench/workload.py), each with an
instruction of exactly 40 tokens and then of exactly 400 tokens (of the model's tokenizer:
`exact_tokens` cuts the texts below to that count and checks it). Modes, one after the other in
this process, on the same requests:

- `card`: the model card's loop (left padding, batches of CARD_BATCH, full-vocabulary head);
- `whole`: rerankd (torch), every sequence run whole (`share_prefix=False`);
- `shared`: rerankd (torch), the instruction+query prefix run once per request.

Every request has its own query, so `shared` gains only inside a request (no reuse across
requests). The scores of the three are compared too (max abs difference of logits).

    python -m bench.prefix_bench --layers 4 --requests 2
    python -m bench.prefix_bench --device cuda --layers 28 --requests 8
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import machine
from bench.llm_rerank_bench import MAX_LENGTH, PREFIX, RESULTS, SUFFIX, model_dir
from bench.workload import Request, WorkloadSpec, make_requests

# The card batches 32, but its full-vocabulary logits at every position (32 x ~1500 tokens x
# 151,669 floats = 30 GB) do not fit this 23 GB machine: 4 per batch here.
CARD_BATCH = 4
SHORT = (
    "Given a web search query from an engineer, retrieve the relevant passages that answer "
    "the query, preferring passages that give the procedure, the limit or the cause asked "
    "about over passages that only mention the equipment by its name"
)
# Cut to 400 tokens: a task description with rules, as teams write for domain rerankers.
LONG = " ".join(
    [
        "Given a question from an engineer about the operation of industrial equipment,",
        "judge whether the passage answers it.",
    ]
    + [
        f"Rule {i}: a passage that only mentions the equipment by name, repeats the question, "
        "or describes a different model of the equipment does not answer it; a passage that "
        "gives the procedure, the limit or the cause asked about does, even if it is short."
        for i in range(1, 11)
    ]
)


def exact_tokens(tokenizer: Any, text: str, count: int) -> str:
    """`text` cut (or repeated, then cut) to exactly `count` tokens of `tokenizer`."""
    while len(tokenizer.encode([text])[0]) < count:
        text = f"{text} {text}"
    ids = tokenizer.encode([text])[0][:count]
    for trim in range(8):  # a cut inside a merged piece may re-encode one token longer
        cut = tokenizer.decode(ids[: count - trim])
        while len(tokenizer.encode([cut])[0]) < count:
            cut += "."
        if len(tokenizer.encode([cut])[0]) == count:
            return cut
    raise ValueError(f"cannot cut the instruction to {count} tokens")


def card_scorer(path: Any, device: str, threads: int) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(path)).to(device).eval()
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    prefix = tokenizer.encode(PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(SUFFIX, add_special_tokens=False)

    def score(request: Request, instruction: str) -> np.ndarray:
        texts = [
            f"<Instruct>: {instruction}\n<Query>: {request.query}\n<Document>: {doc}"
            for doc in request.documents
        ]
        raw: list[float] = []
        for start in range(0, len(texts), CARD_BATCH):
            inputs = tokenizer(
                texts[start : start + CARD_BATCH],
                padding=False,
                truncation="longest_first",
                return_attention_mask=False,
                max_length=MAX_LENGTH - len(prefix) - len(suffix),
            )
            inputs["input_ids"] = [prefix + ids + suffix for ids in inputs["input_ids"]]
            batch = tokenizer.pad(inputs, padding=True, return_tensors="pt").to(device)
            with torch.no_grad():
                logits = model(**batch).logits[:, -1, :]
            raw += (logits[:, yes] - logits[:, no]).float().tolist()
        return np.asarray(raw)

    return score


def rerankd_scorer(path: Any, device: str, threads: int, share: bool) -> Any:
    from rerankd import Reranker

    reranker = Reranker(path, device=device, threads=threads, share_prefix=share)
    return lambda request, instruction: reranker.score(
        request.pairs(), raw=True, instruction=instruction
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--requests", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "prefix_bench.json")
    args = parser.parse_args()
    path = model_dir(args.layers)
    requests = make_requests(args.requests, WorkloadSpec(documents=32, seed=7))
    pairs = sum(len(r.documents) for r in requests)
    from rerankd.engine.tokenize import TextTokenizer

    tokenizer = TextTokenizer.from_dir(path)
    instructions = {
        "short": exact_tokens(tokenizer, SHORT, 40),
        "long": exact_tokens(tokenizer, LONG, 400),
    }
    results: dict[str, Any] = {
        "machine": machine.describe(),
        "threads": args.threads,
        "layers": args.layers,
        "device": args.device,
        "pairs": pairs,
    }
    modes = {
        "card": lambda: card_scorer(path, args.device, args.threads),
        "whole": lambda: rerankd_scorer(path, args.device, args.threads, False),
        "shared": lambda: rerankd_scorer(path, args.device, args.threads, True),
    }
    scores: dict[tuple[str, str], np.ndarray] = {}
    for mode, build in modes.items():
        scorer = build()
        scorer(requests[0], instructions["short"])  # warm-up
        for label, instruction in instructions.items():
            started = time.perf_counter()
            scores[mode, label] = np.concatenate([scorer(r, instruction) for r in requests])
            seconds = time.perf_counter() - started
            results[f"{mode}/{label}"] = round(pairs / seconds, 2)
            print(f"{mode:>6} {label:>5}: {pairs / seconds:8.2f} pairs/s", flush=True)
        del scorer
    for label, instruction in instructions.items():
        results[f"instruction_tokens/{label}"] = len(tokenizer.encode([instruction])[0])
        for mode in ("whole", "shared"):
            diff = float(np.abs(scores[mode, label] - scores["card", label]).max())
            results[f"max_abs_vs_card/{mode}/{label}"] = diff
        speedup = results[f"shared/{label}"] / results[f"whole/{label}"]
        results[f"speedup_shared_vs_whole/{label}"] = round(speedup, 2)
        results[f"speedup_shared_vs_card/{label}"] = round(
            results[f"shared/{label}"] / results[f"card/{label}"], 2
        )
    print(json.dumps(results, indent=1))
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
