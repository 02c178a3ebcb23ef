"""Fitting a calibration and measuring it: Platt and isotonic, chosen by held-out log-loss.

The split is by query, so no query's documents are on both sides: what the report calls
held-out was never seen by the fit. Both methods are fitted on the training queries with
scikit-learn; the one with the lower held-out log-loss is kept, with exactly the parameters
that were measured (no refit on everything, so the reported figures are the served map's).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import numpy as np

from rerankd.calibration.model import Calibration, Method, ModelIdentity

EPS = 1e-12  # probabilities are clipped to [EPS, 1 - EPS] for log-loss


@dataclass(frozen=True)
class Labeled:
    """Scored pairs: raw model scores, the probabilities served without calibration, labels,
    and the query each pair belongs to (the unit of the split)."""

    raw: np.ndarray  # float64
    uncalibrated: np.ndarray  # the model's own [0, 1] score (sigmoid, (cos + 1) / 2, ...)
    labels: np.ndarray  # 0/1
    groups: np.ndarray  # query number per pair

    def subset(self, mask: np.ndarray) -> Labeled:
        return Labeled(
            self.raw[mask], self.uncalibrated[mask], self.labels[mask], self.groups[mask]
        )


def ece(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error over `bins` equal-width bins: the pair-weighted mean gap
    between a bin's mean probability and its share of relevant pairs."""
    p, y = np.asarray(probabilities, np.float64), np.asarray(labels, np.float64)
    if p.size == 0:
        return 0.0
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.sum() * abs(p[inside].mean() - y[inside].mean())
    return float(total / p.size)


def brier(probabilities: np.ndarray, labels: np.ndarray) -> float:
    p, y = np.asarray(probabilities, np.float64), np.asarray(labels, np.float64)
    return float(np.mean((p - y) ** 2))


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(np.asarray(probabilities, np.float64), EPS, 1 - EPS)
    y = np.asarray(labels, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def measure(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> dict[str, float]:
    return {
        "ece": round(ece(probabilities, labels, bins), 6),
        "brier": round(brier(probabilities, labels), 6),
        "log_loss": round(log_loss(probabilities, labels), 6),
    }


def split(data: Labeled, holdout: float, seed: int) -> tuple[Labeled, Labeled]:
    """(train, held-out) by query; at least one query on each side."""
    queries = np.unique(data.groups)
    if queries.size < 2:
        raise ValueError("calibration needs at least two queries (one to fit, one to hold out)")
    order = np.random.default_rng(seed).permutation(queries)
    held = max(1, min(queries.size - 1, round(queries.size * holdout)))
    mask = np.isin(data.groups, order[:held])
    return data.subset(~mask), data.subset(mask)


def fit_platt(raw: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """`sigmoid(a * raw + b)` by logistic regression on the one feature (weak L2 so a set that
    separates perfectly still gets finite parameters)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e4)
    model.fit(raw.reshape(-1, 1), labels)
    return {"a": float(model.coef_[0, 0]), "b": float(model.intercept_[0])}


def fit_isotonic(raw: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The isotonic step function's thresholds, for `np.interp` (clipped outside them)."""
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    model.fit(raw, labels)
    xs = np.asarray(model.X_thresholds_, np.float64)
    ys = np.asarray(model.y_thresholds_, np.float64)
    keep = np.concatenate([[True], np.diff(xs) > 0])  # np.interp needs strictly increasing x
    return {"x": [float(v) for v in xs[keep]], "y": [float(v) for v in ys[keep]]}


FITTERS = {"platt": fit_platt, "isotonic": fit_isotonic}


@dataclass(frozen=True)
class Fitted:
    calibration: Calibration
    held_out: Labeled
    candidates: dict[str, dict[str, float]]  # method -> held-out metrics


def fit(
    data: Labeled,
    model: ModelIdentity,
    *,
    methods: tuple[Method, ...] = ("platt", "isotonic"),
    holdout: float = 0.3,
    seed: int = 0,
    bins: int = 15,
    provenance: dict[str, Any] | None = None,
) -> Fitted:
    """Fit each method on the training queries; keep the best held-out log-loss."""
    if bins < 10:
        raise ValueError("ECE needs at least 10 bins")
    train, held = split(data, holdout, seed)
    if np.unique(train.labels).size < 2:
        raise ValueError(
            "the training queries need relevant and non-relevant documents both; add data"
        )
    candidates: dict[str, dict[str, float]] = {}
    fitted: dict[str, Calibration] = {}
    for method in methods:
        parameters = FITTERS[method](train.raw, train.labels)
        if method == "platt" and parameters["a"] < 0:
            continue  # the scores run against relevance: no monotone sigmoid fits them
        calibration = Calibration(method, parameters, model)
        fitted[method] = calibration
        candidates[method] = measure(calibration.apply(held.raw), held.labels, bins)
    if not fitted:
        raise ValueError("no method could be fitted: the scores do not rise with relevance")
    best = min(fitted, key=lambda m: candidates[m]["log_loss"])
    metrics = {
        "bins": bins,
        "split": {
            "holdout": holdout,
            "seed": seed,
            "train_pairs": int(train.labels.size),
            "held_out_pairs": int(held.labels.size),
            "held_out_queries": int(np.unique(held.groups).size),
        },
        "before": measure(held.uncalibrated, held.labels, bins),
        "after": candidates[best],
        "candidates": candidates,
    }
    chosen = Calibration(
        fitted[best].method,
        fitted[best].parameters,
        model,
        data=provenance or {},
        fitted_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        metrics=metrics,
    )
    return Fitted(chosen, held, candidates)


def reliability(
    probabilities: np.ndarray, labels: np.ndarray, bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean probability, share relevant, pairs) of each non-empty bin."""
    p, y = np.asarray(probabilities, np.float64), np.asarray(labels, np.float64)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    rows = [
        (p[which == b].mean(), y[which == b].mean(), (which == b).sum())
        for b in range(bins)
        if (which == b).any()
    ]
    if not rows:
        return np.empty(0), np.empty(0), np.empty(0)
    mean, share, count = (np.asarray(c, np.float64) for c in zip(*rows, strict=True))
    return mean, share, count
