"""The two figures of docs/benchmarks.md: throughput vs concurrency, latency distribution."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server or in CI

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

COLORS = {"tutorial": "#888888", "infinity": "#d62728", "rerankd": "#1f77b4"}
STYLES = {"torch": "-", "onnx": "--", "optimum": ":"}


def _style(system: str) -> dict[str, object]:
    family = system.split("-")[0]
    kind = next((k for k in STYLES if k in system), "torch")
    marker = "s" if "int8" in system else "o"
    return {"color": COLORS.get(family, "black"), "linestyle": STYLES[kind], "marker": marker}


def throughput(model: dict, out: Path) -> Path:
    """Pairs/s against concurrency, one line per system."""
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    for entry in model["systems"]:
        points = entry.get("points") or []
        if not points:
            continue
        xs = [p["concurrency"] for p in points]
        ys = [p["pairs_per_s"] for p in points]
        ax.plot(xs, ys, label=entry["system"], **_style(entry["system"]))
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({p["concurrency"] for e in model["systems"] for p in e.get("points", [])}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("concurrent clients (32 passages per request)")
    ax.set_ylabel("pairs / s")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{model['model']}: throughput vs concurrency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def latency(model: dict, concurrency: int, out: Path) -> Path:
    """Per-request latency at one concurrency: a box per system, every request a dot."""
    names, samples = [], []
    for entry in model["systems"]:
        for point in entry.get("points") or []:
            if point["concurrency"] == concurrency and point.get("latencies"):
                names.append(entry["system"])
                samples.append(point["latencies"])
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.55 * max(len(names), 1)))
    if samples:
        ax.boxplot(samples, vert=False, tick_labels=names, showfliers=False)
        for row, values in enumerate(samples, start=1):
            ax.scatter(
                values, [row] * len(values), s=10, alpha=0.6, color=_style(names[row - 1])["color"]
            )
    ax.set_xlabel("request latency (s)")
    ax.set_xlim(left=0)
    ax.set_title(f"{model['model']}: latency at concurrency {concurrency}")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
