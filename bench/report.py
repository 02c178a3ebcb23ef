"""docs/benchmarks.md from run_all's results: tables, targets, plots, and the caveats."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench import plots

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
IMAGES = ROOT / "docs" / "img"
TARGET_CONCURRENCY = 4
RSS_ALLOWANCE_MB = 400
MIN_SPEARMAN = 0.98
# Sections after this line come from other benchmarks (bench/fairness.py, bench/int8_bench.py)
# and are kept as they are when this page is regenerated.
KEEP_MARKER = "<!-- kept by bench/report.py: sections from other benchmarks below -->"


def write(results: dict, doc: Path = DOC) -> Path:
    IMAGES.mkdir(parents=True, exist_ok=True)
    lines = _header(results)
    for model in results["models"]:
        lines += _model_section(model, results["gemm"]["gflops"])
    lines += _v2m3_section(results.get("v2m3") or [])
    lines += _method_section(results)
    doc.parent.mkdir(parents=True, exist_ok=True)
    kept = doc.read_text(encoding="utf-8").partition(KEEP_MARKER)[2] if doc.is_file() else ""
    tail = [KEEP_MARKER + kept.rstrip("\n")] if kept else []
    doc.write_text("\n".join(lines + tail) + "\n", encoding="utf-8")
    return doc


def _header(results: dict) -> list[str]:
    m = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return [
        "# Benchmarks",
        "",
        "rerankd against the servers a user would pick instead, on the same machine and the same "
        "model directories, one query and 32 passages (20-400 words, English and Chinese) per "
        "request. Regenerate with `make bench` (`python -m bench.run_all`); "
        f"this page is profile `{results['profile']}`, which took "
        f"{results['duration_s'] / 60:.0f} minutes.",
        "",
        f"- **Date**: {m['date']}",
        f"- **Machine**: {m['cpu']}, {m['cores']} cores ({', '.join(m['isa'])}), "
        f"{m['memory_gib']} GiB; {results['threads']} inference threads per server",
        f"- **Software**: Python {m['python']}, {versions}",
        f"- **Compute ceiling**: fp32 GEMM with torch on {results['gemm']['threads']} threads: "
        f"**{results['gemm']['gflops']} GFLOP/s** (best of {', '.join(results['gemm']['by_shape'])})",
        f"- **Other load on the machine** when the run started: "
        f"{results['foreign_cores_at_start']} cores busy (each point's own figure is in its table)",
        "",
    ]


def _model_section(model: dict, ceiling: float) -> list[str]:
    name = model["model"]
    lines = [
        f"## {name} (the shape of {model['reference']})",
        "",
        f"{model['weights_mb']} MB of weights; {model['layer_params'] / 1e6:.1f} M parameters in "
        f"the transformer layers; {model['real_tokens_per_pair']} real tokens per pair on "
        f"average; padding each request to its longest pair would cost "
        f"x{model['padding_factor']} the real tokens.",
        "",
        "| system | clients | pairs/s | req/s | p50 s | p95 s | p99 s | errors "
        "| useful GFLOP/s | % of GEMM | peak RSS MB | other load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in model["systems"]:
        if entry.get("failed"):
            lines.append(f"| {entry['system']} | | failed: {_one_line(entry['failed'])} |||||||||")
            continue
        for p in entry["points"]:
            lines.append(
                f"| {entry['system']} | {p['concurrency']} | {p['pairs_per_s']:.2f} "
                f"| {p['requests_per_s']:.3f} | {p['p50_s']:.1f} | {p['p95_s']:.1f} "
                f"| {p['p99_s']:.1f} | {p['errors']} | {p['useful_gflops']:.1f} "
                f"| {100 * p['useful_gflops'] / ceiling:.0f}% | {p['peak_rss_mb']:.0f} "
                f"| {p['foreign_cores']:.2f} |"
            )
    lines += ["", *_accuracy_table(model), "", *_targets(model, ceiling), ""]
    lines += _figures(model)
    return lines


def _accuracy_table(model: dict) -> list[str]:
    lines = [
        "Scores against sentence-transformers `CrossEncoder.predict` (fp32) on the same model "
        "and pairs, over every response to the checked requests:",
        "",
        "| system | pairs checked | largest abs deviation | Spearman vs fp32 reference |",
        "|---|---:|---:|---:|",
    ]
    for entry in model["systems"]:
        acc = entry.get("accuracy")
        if acc:
            lines.append(
                f"| {entry['system']} | {acc['pairs']} | {acc['max_deviation']:.2e} "
                f"| {acc['spearman']:.4f} |"
            )
    return lines


def _point(entry: dict, concurrency: int) -> dict | None:
    for point in entry.get("points") or []:
        if point["concurrency"] == concurrency and not point["errors"]:
            return point
    return None


def _best(model: dict, prefix: str, concurrency: int, *, fp32_only: bool = False):
    """The fastest system of a family at a concurrency, among those that keep the ranking."""
    best = None
    for entry in model["systems"]:
        name = entry["system"]
        if not name.startswith(prefix) or (fp32_only and "int8" in name):
            continue
        acc = entry.get("accuracy") or {}
        if acc.get("spearman", 0.0) < MIN_SPEARMAN:
            continue
        point = _point(entry, concurrency)
        if point and (best is None or point["pairs_per_s"] > best[1]["pairs_per_s"]):
            best = (name, point)
    return best


def _targets(model: dict, ceiling: float) -> list[str]:
    c = TARGET_CONCURRENCY
    ours = _best(model, "rerankd", c)
    ours_fp32 = _best(model, "rerankd", c, fp32_only=True)
    checks = [
        ("rerankd best ≥ 2× best Infinity", ours, _best(model, "infinity", c), 2.0),
        ("rerankd best ≥ 4× tutorial", ours, _best(model, "tutorial", c), 4.0),
        ("rerankd fp32 ≥ 1.5× Infinity torch", ours_fp32, _best(model, "infinity-torch", c), 1.5),
    ]
    lines = [
        f"Targets at {c} clients (only modes with Spearman ≥ {MIN_SPEARMAN} count):",
        "",
        "| target | measured | met |",
        "|---|---|:-:|",
    ]
    for label, mine, theirs, factor in checks:
        if not mine or not theirs:
            lines.append(f"| {label} | not measured | – |")
            continue
        ratio = mine[1]["pairs_per_s"] / theirs[1]["pairs_per_s"]
        lines.append(
            f"| {label} | {mine[0]} {mine[1]['pairs_per_s']:.2f} vs {theirs[0]} "
            f"{theirs[1]['pairs_per_s']:.2f} pairs/s = {ratio:.2f}× | {_mark(ratio >= factor)} |"
        )
    if ours_fp32:
        share = ours_fp32[1]["useful_gflops"] / ceiling
        lines.append(
            f"| rerankd fp32 useful FLOP/s ≥ 60% of GEMM | {ours_fp32[0]}: "
            f"{100 * share:.0f}% | {_mark(share >= 0.6)} |"
        )
    limit = model["weights_mb"] + RSS_ALLOWANCE_MB
    for entry in model["systems"]:
        if entry["system"].startswith("rerankd") and entry.get("points"):
            peak = max(p["peak_rss_mb"] for p in entry["points"])
            lines.append(
                f"| {entry['system']} RSS ≤ weights + {RSS_ALLOWANCE_MB} MB ({limit:.0f} MB) "
                f"| {peak:.0f} MB | {_mark(peak <= limit)} |"
            )
    return lines


def _figures(model: dict) -> list[str]:
    name = model["model"]
    levels = sorted({p["concurrency"] for e in model["systems"] for p in e.get("points", [])})
    lines = []
    if len(levels) > 1:
        path = plots.throughput(model, IMAGES / f"throughput-{name}.png")
        lines.append(f"![{name} throughput vs concurrency](img/{path.name})")
    if levels:
        level = TARGET_CONCURRENCY if TARGET_CONCURRENCY in levels else levels[-1]
        path = plots.latency(model, level, IMAGES / f"latency-{name}.png")
        lines.append(f"![{name} latency at {level} clients](img/{path.name})")
    return [*lines, ""]


def _v2m3_section(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = [
        "## bge-reranker-v2-m3 size (XLM-R, 24 layers, hidden 1024)",
        "",
        "Latency of one request with 32 passages, one client, after a warm-up request:",
        "",
        "| system | latency s | tokens | peak RSS MB | start-up s |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.get("failed"):
            lines.append(f"| {row['system']} | failed: {_one_line(row['failed'])} ||||")
        else:
            lines.append(
                f"| {row['system']} | {row['latency_s']} | {row['tokens']} "
                f"| {row['peak_rss_mb']:.0f} | {row['startup_s']} |"
            )
    return [*lines, ""]


def _method_section(results: dict) -> list[str]:
    return [
        "## How this was measured",
        "",
        "- Models are built by `bench/fixtures.py`: the MiniLM-L6 cross-encoder takes the "
        "all-MiniLM-L6-v2 encoder weights plus a new one-label head; the XLM-R models have "
        "seeded random weights and a Unigram tokenizer trained on workload-like text (about 1.3 "
        "tokens per English word, 0.6 per Chinese character). Speed depends on shapes and token "
        "counts, not on what the weights learnt; scores are not meaningful relevance.",
        "- Each system is a separate server process on 127.0.0.1 serving the same directory "
        f"with {results['threads']} threads and `max_length` {results['max_length']}. "
        "The tutorial baseline is `bench/baselines/tutorial_server.py`; Infinity runs from its "
        "own venv (`bench/peers.py`), offline, telemetry off, `--no-compile`; its optimum "
        "engine serves files exported with `optimum-cli` (int8: `--avx2` dynamic quantization). "
        f"rerankd runs with its batch budget ({results['max_batch_tokens']}) and its score "
        "cache off.",
        "- Load: `bench/loadgen.py`, closed loop, each client sends its next request when the "
        "last returns; pairs/s is completed pairs over first-send-to-last-response time.",
        f"- Useful FLOPs: {results['flops_formula']}; a share of the GEMM ceiling above.",
        "- Peak RSS: the server's whole process tree, sampled every 100 ms during the load.",
        "- Other load: CPU used by processes other than the server and the driver during each "
        "point, in cores. This machine is shared: points taken while it is high are slower than "
        "the machine can do.",
    ]


def _mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:160].replace("|", "/")


def main() -> None:
    """Rewrite the page from saved results: `python -m bench.report [bench/results/run_all.json]`."""
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench" / "results" / "run_all.json"
    print(write(json.loads(source.read_text(encoding="utf-8"))))


if __name__ == "__main__":
    main()
