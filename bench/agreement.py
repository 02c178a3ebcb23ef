"""Do a system's scores match the reference? Largest deviation and rank agreement."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def max_deviation(scores: Sequence[float], reference: Sequence[float]) -> float:
    """Largest absolute difference between two score lists for the same pairs."""
    return float(np.max(np.abs(np.asarray(scores, float) - np.asarray(reference, float))))


def spearman(scores: Sequence[float], reference: Sequence[float]) -> float:
    """Spearman's rank correlation over all pairs (ties get their average rank)."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(scores, float), np.asarray(reference, float)).statistic)


def reference_scores(model_dir: str, pairs: list[tuple[str, str]], max_length: int) -> np.ndarray:
    """sentence-transformers `CrossEncoder.predict`: the scores every system must reproduce."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(model_dir, max_length=max_length, device="cpu")
    return np.asarray(model.predict(pairs, batch_size=32, show_progress_bar=False), dtype=float)
