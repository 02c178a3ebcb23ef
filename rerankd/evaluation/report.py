"""The report three ways: a terminal table, JSON, and PNGs (a bar chart per metric and the
reliability diagram of the models' scores against the judgments)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from rerankd.evaluation.runner import BASELINE, Report

CALIBRATION_BINS = 15  # as `rerankd calibrate` measures


def probabilities(report: Report) -> dict[str, np.ndarray]:
    """Each model's scores over every pair, for those whose scores are probabilities (in
    [0, 1]: a served calibration's, or the model's own sigmoid); raw logits have none."""
    found = {}
    for result in report.results:
        if result.label == BASELINE or not result.scores:
            continue
        flat = np.concatenate(result.scores)
        if flat.size and np.isfinite(flat).all() and flat.min() >= 0 and flat.max() <= 1:
            found[result.label] = flat
    return found


def calibration(report: Report) -> dict[str, dict[str, float]]:
    """ECE, Brier and log-loss of each model's scores read as P(relevant)."""
    from rerankd.calibration.fit import measure

    if not report.labels:
        return {}
    labels = np.concatenate(report.labels)
    return {
        label: measure(scores, labels, CALIBRATION_BINS)
        for label, scores in probabilities(report).items()
    }


def as_json(report: Report) -> dict[str, Any]:
    """`models` maps each row's label to its metrics under their usual names (`mrr@10`, ...)."""
    return {
        "data": report.data,
        "queries": report.queries,
        "pairs": report.pairs,
        "metrics": report.metrics,
        "models": {r.label: r.metrics for r in report.results},
        "timing": {
            r.label: {
                "seconds": round(r.seconds, 3),
                "queries_per_second": round(r.queries_per_second, 2),
            }
            for r in report.results
            if r.label != BASELINE
        },
        "agreement": [a.as_dict() for a in report.agreements],
        "calibration": calibration(report),
        "notes": report.notes,
    }


def write_json(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(as_json(report), indent=2) + "\n", encoding="utf-8")


def print_report(report: Report) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(title=f"{report.data}: {report.queries} queries, {report.pairs} pairs")
    table.add_column("model")
    for metric in report.metrics:
        table.add_column(metric, justify="right")
    table.add_column("queries/s", justify="right")
    best = {m: max(r.metrics[m] for r in report.results) for m in report.metrics}
    for result in report.results:
        cells = [
            f"[bold]{result.metrics[m]:.4f}[/bold]"
            if result.metrics[m] == best[m]
            else f"{result.metrics[m]:.4f}"
            for m in report.metrics
        ]
        speed = "" if result.label == BASELINE else f"{result.queries_per_second:.1f}"
        name = "baseline (candidate order)" if result.label == BASELINE else result.label
        table.add_row(escape(name), *cells, speed)
    console.print(table)
    if report.agreements:
        agree = Table(title="score agreement with the first model")
        for column in (
            "model",
            "spearman",
            "per-query spearman",
            "max |Δscore|",
            "mean |Δscore|",
            "same top-1",
        ):
            agree.add_column(column, justify="left" if column == "model" else "right")
        for a in report.agreements:
            agree.add_row(
                escape(a.other),
                f"{a.spearman:.4f}",
                f"{a.spearman_per_query:.4f}",
                f"{a.max_abs_deviation:.4f}",
                f"{a.mean_abs_deviation:.4f}",
                f"{a.top1_agreement:.1%}",
            )
        console.print(agree)
    for note in report.notes:
        console.print(f"[dim]note: {note}[/dim]")


def write_plots(report: Report, directory: Path) -> list[Path]:
    """One horizontal bar chart per metric, baseline included, and `reliability.png` (each
    model whose scores are probabilities); needs matplotlib (`eval` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("plots need matplotlib: pip install 'rerankd[eval]'") from exc
    directory.mkdir(parents=True, exist_ok=True)
    labels = [
        "baseline (candidate order)" if r.label == BASELINE else r.label for r in report.results
    ]
    written = []
    for metric in report.metrics:
        values = [r.metrics[metric] for r in report.results]
        figure, axes = plt.subplots(figsize=(7, 0.5 * len(labels) + 1.4))
        colors = ["#9e9e9e" if r.label == BASELINE else "#3f6fb5" for r in report.results]
        bars = axes.barh(labels[::-1], values[::-1], color=colors[::-1])
        axes.bar_label(bars, fmt="%.3f", padding=3)
        axes.set_xlim(0, max(1.0, max(values) * 1.15))
        axes.set_xlabel(metric)
        axes.set_title(f"{report.data}: {metric} ({report.queries} queries)")
        figure.tight_layout()
        path = directory / f"{metric.replace('@', '_at_')}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    curves = list(probabilities(report).items())
    if curves and report.labels:
        from rerankd.calibration.plot import reliability_diagram

        title = f"{report.data}: reliability ({report.pairs} pairs)"
        judged = np.concatenate(report.labels)
        path = directory / "reliability.png"
        written.append(reliability_diagram(curves, judged, path, title, CALIBRATION_BINS))
    return written
