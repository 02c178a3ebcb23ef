"""Fine-tuned benchmark fixtures: int8 and bf16 agreement only mean something on trained weights.

`bench.fixtures` builds models of the right shapes; MiniLM's encoder is pretrained but its head
is new, and the XLM-R base is random. Random weights give scores bunched within a hair of each
other, so any precision "fails" on them and the figure says nothing. This fine-tunes each
fixture with `rerankd finetune` (listnet, one epoch, a small recipe a shared 2-core machine trains in minutes) on term-matching queries in English and
Chinese drawn like `bench.workload` (another seed, shorter passages): the result ranks by
graded relevance, so its scores spread as a trained reranker's do.

    python -m bench.tuned minilm-l6 xlmr-base
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from bench import fixtures
from bench.workload import _CHINESE, _ENGLISH, _join, _passage

TRAIN_SEED = 4242  # not the benchmark's, not the probe's
RECIPE = {"queries": 64, "negatives": 3, "epochs": 1.0, "max_length": 96, "lr": 2e-4}


def training_set(path: Path, queries: int, seed: int = TRAIN_SEED) -> Path:
    """Triples: a passage that reuses the query's terms is the positive, others negatives."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for _ in range(queries):
            chinese = rng.random() < 0.35
            vocabulary = _CHINESE if chinese else _ENGLISH
            terms = rng.sample(vocabulary, rng.randint(2, 5))
            query = _join(terms, chinese)
            positive = _passage(rng, rng.randint(15, 90), chinese, terms)
            negatives = [
                _passage(rng, rng.randint(15, 90), rng.random() < 0.5, terms[:1] if i < 2 else [])
                for i in range(int(RECIPE["negatives"]))
            ]
            out.write(json.dumps({"query": query, "positive": positive, "negatives": negatives}))
            out.write("\n")
    return path


def tuned_dir(name: str, threads: int = 2) -> Path:
    """The fine-tuned copy of fixture `name`, trained once and cached next to it."""
    base = fixtures.model_dir(name)
    out = fixtures.MODELS / f"{name}-tuned"
    marker = out / "bench-tuned.json"
    recipe = {**RECIPE, "base": json.loads((base / fixtures.RECIPE_FILE).read_text())}
    if marker.is_file() and json.loads(marker.read_text()) == recipe:
        return out
    data = training_set(fixtures.WORK / f"train-{name}.jsonl", int(RECIPE["queries"]))
    command = [
        sys.executable, "-m", "rerankd", "finetune", "--model", str(base), "--data", str(data),
        "--output", str(out), "--epochs", str(RECIPE["epochs"]), "--max-length",
        str(RECIPE["max_length"]), "--learning-rate", str(RECIPE["lr"]), "--threads",
        str(threads), "--overwrite", "--save-steps", "100000",
    ]  # fmt: skip
    subprocess.run(command, check=True)
    marker.write_text(json.dumps(recipe), encoding="utf-8")
    return out


if __name__ == "__main__":
    for model in sys.argv[1:] or ["minilm-l6"]:
        print(tuned_dir(model), flush=True)
