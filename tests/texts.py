"""Texts that stress tokenization: lengths, scripts, emoji, combining characters."""

from __future__ import annotations

import random

WORDS = (
    "reranking passage query relevance model token batch cluster apple phone titanium orchard "
    "fruit river capital France Paris Beijing Shanghai server latency throughput cache"
).split()
CHINESE = "苹果手机的新功能包括更好的相机北京是中华人民共和国的首都上海是中国最大的城市之一"
SPECIAL = ["🙂🚀🍎", "e\u0301 n\u0303 a\u0308", "Ünïcödé façade naïve café", "a" * 40]


def mixed_pairs(count: int, seed: int = 0, max_words: int = 400) -> list[tuple[str, str]]:
    """Queries and documents of very different lengths, in English and Chinese."""
    rng = random.Random(seed)
    pairs = []
    for i in range(count):
        query = " ".join(rng.choices(WORDS, k=rng.randint(1, 8)))
        words = rng.randint(1, max_words)
        document = " ".join(rng.choices(WORDS, k=words))
        if i % 3 == 0:
            document += " " + CHINESE[: rng.randint(1, len(CHINESE))]
        if i % 5 == 0:
            document += " " + rng.choice(SPECIAL)
        if i % 7 == 0:
            query = CHINESE[: rng.randint(1, 12)]
        pairs.append((query, document))
    return pairs
