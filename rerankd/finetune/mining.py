"""Hard negatives: passages a bi-encoder ranks high for a query that are not its positives.

Random negatives teach a cross-encoder little; the passages a first-stage retriever confuses
with the answer are the ones it must learn to push down.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from rerankd.finetune.data import TrainSet

Advance = Callable[[int], None]


def needs_mining(train: TrainSet, negatives: int) -> bool:
    return any(len(q.negatives) < negatives for q in train.queries)


def mine_hard_negatives(
    train: TrainSet,
    negatives: int,
    model: str = "builtin",
    device: str = "cpu",
    skip_top: int = 0,
    advance: Advance | None = None,
) -> int:
    """Top up each query's negatives to `negatives` from the bi-encoder's ranking of the corpus;
    returns how many were added. `skip_top` skips the very top hits (likely unlabeled positives)."""
    from rerankd.evaluation.retrieve import DenseRetriever

    retriever = DenseRetriever(model, device=device)
    corpus = {str(i): text for i, text in enumerate(train.corpus)}
    ids = [str(i) for i in range(len(train.queries))]
    wanted = negatives + skip_top + max(len(q.positives) for q in train.queries)
    ranked = retriever.top_k(ids, [q.query for q in train.queries], corpus, wanted, advance)
    added = 0
    for qid, query in zip(ids, train.queries, strict=True):
        known = set(query.positives) | set(query.negatives)
        fresh = [corpus[d] for d in ranked[qid] if corpus[d] not in known][skip_top:]
        take = fresh[: max(0, negatives - len(query.negatives))]
        query.negatives.extend(take)
        added += len(take)
    return added


def fill_random_negatives(train: TrainSet, negatives: int, seed: int) -> int:
    """The fallback when a query still has too few: random passages from the corpus."""
    rng = random.Random(seed)
    added = 0
    for query in train.queries:
        known = set(query.positives) | set(query.negatives)
        pool = [t for t in train.corpus if t not in known]
        missing = max(0, negatives - len(query.negatives))
        take = rng.sample(pool, min(missing, len(pool)))
        query.negatives.extend(take)
        added += len(take)
    return added
