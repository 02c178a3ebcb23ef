"""A generated relevance task: the relevant passage shares a rare keyword with the query.

For tests, benchmarks and the docs, where no real data set can be downloaded. Words come
from the built-in model's English WordPiece vocabulary (whole-word entries only), so every
word is one token for BERT-family models. Each query names one keyword; its relevant
passage contains it, some "hard" negatives contain other keywords, the rest none. The
relevant passage sits at a random position, so the candidate order (the baseline) is random.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def vocabulary(
    seed: int = 0, keywords: int = 300, filler: int = 600
) -> tuple[list[str], list[str]]:
    """(keywords, filler words): disjoint, drawn from the built-in model's vocabulary."""
    from rerankd.devtools.synthetic import builtin_tokenizer_dir

    lines = (builtin_tokenizer_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    words = [w for w in lines[2000:] if w.isascii() and w.isalpha() and len(w) >= 4]
    random.Random(seed).shuffle(words)
    return words[:keywords], words[keywords : keywords + filler]


def keyword_task(
    queries: int,
    *,
    candidates: int = 10,
    hard: int = 3,
    seed: int = 0,
    words: int = 12,
    vocabulary_seed: int = 0,
) -> list[dict[str, Any]]:
    """`queries` rerankd-JSONL records: `{"id", "query", "documents", "relevant": [i]}`."""
    keywords, filler = vocabulary(vocabulary_seed)
    rng = random.Random(seed)

    def passage(keyword: str | None) -> str:
        text = rng.sample(filler, words)
        if keyword is not None:
            text.insert(rng.randrange(words + 1), keyword)
        return " ".join(text)

    records = []
    for number in range(queries):
        keyword = rng.choice(keywords)
        others = rng.sample([k for k in keywords if k != keyword], hard)
        documents = [passage(keyword)] + [passage(o) for o in others]
        documents += [passage(None) for _ in range(candidates - 1 - hard)]
        order = list(range(candidates))
        rng.shuffle(order)
        query = f"{keyword} " + " ".join(rng.sample(filler, 3))
        records.append(
            {
                "id": f"q{seed}-{number}",
                "query": query,
                "documents": [documents[i] for i in order],
                "relevant": [order.index(0)],
            }
        )
    return records


def write_jsonl(records: Iterable[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def as_triples(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same queries as `rerankd finetune` triples: `{"query", "positive", "negatives"}`."""
    triples = []
    for record in records:
        relevant = set(record["relevant"])
        documents = record["documents"]
        triples.append(
            {
                "query": record["query"],
                "positive": [d for i, d in enumerate(documents) if i in relevant],
                "negatives": [d for i, d in enumerate(documents) if i not in relevant],
            }
        )
    return triples
