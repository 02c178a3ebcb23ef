"""The reliability diagram: predicted probability against the observed share of relevant
pairs, before and after calibration (a perfectly calibrated model lies on the diagonal)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rerankd.calibration.fit import ece, reliability

Curve = tuple[str, np.ndarray]  # (label, probabilities)


def reliability_diagram(
    curves: Sequence[Curve], labels: np.ndarray, path: Path, title: str, bins: int = 15
) -> Path:
    """One PNG: a curve per score source (with its ECE in the legend) and a histogram of
    where the pairs fall; needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError(
            "the reliability diagram needs matplotlib: pip install matplotlib"
        ) from exc
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(6, 6.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot([0, 1], [0, 1], linestyle=":", color="#777777", label="perfectly calibrated")
    edges = np.linspace(0, 1, bins + 1)
    for name, probabilities in curves:
        mean, share, _ = reliability(probabilities, labels, bins)
        error = ece(probabilities, labels, bins)
        top.plot(mean, share, marker="o", label=f"{name} (ECE {error:.3f})")
        bottom.hist(probabilities, bins=edges, alpha=0.5, label=name)
    top.set_ylabel("share of relevant pairs")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_title(title)
    top.legend(loc="upper left", fontsize=8)
    bottom.set_xlabel("predicted probability of relevance")
    bottom.set_ylabel("pairs")
    bottom.set_yscale("log")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
