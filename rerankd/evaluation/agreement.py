"""How closely two modes of a model agree on the same pairs: "is int8 good enough here?"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Agreement:
    reference: str
    other: str
    spearman: float  # rank correlation over every (query, candidate) pair
    spearman_per_query: float  # mean of each query's own rank correlation: what reranking sees
    max_abs_deviation: float  # the largest score difference on any pair
    mean_abs_deviation: float
    top1_agreement: float  # share of queries whose best candidate is the same

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman's rho (ties get their average rank); 1.0 when both are constant and equal."""
    from scipy.stats import spearmanr

    x, y = np.asarray(a, float), np.asarray(b, float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 1.0 if np.array_equal(np.argsort(x), np.argsort(y)) else 0.0
    return float(spearmanr(x, y).statistic)


def compare(
    reference: str, other: str, first: list[np.ndarray], second: list[np.ndarray]
) -> Agreement:
    """`first[i]` and `second[i]` are query i's candidate scores from the two modes."""
    flat_a, flat_b = np.concatenate(first), np.concatenate(second)
    deviation = np.abs(flat_a - flat_b)
    return Agreement(
        reference=reference,
        other=other,
        spearman=spearman(flat_a, flat_b),
        spearman_per_query=float(
            np.mean([spearman(a, b) for a, b in zip(first, second, strict=True)])
        ),
        max_abs_deviation=float(deviation.max()),
        mean_abs_deviation=float(deviation.mean()),
        top1_agreement=float(
            np.mean(
                [int(np.argmax(a)) == int(np.argmax(b)) for a, b in zip(first, second, strict=True)]
            )
        ),
    )
