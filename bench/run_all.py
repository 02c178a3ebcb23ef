"""The whole comparison, one command: `python -m bench.run_all` (what `make bench` runs).

For each model, each system runs as a real server on 127.0.0.1 and is driven by the
closed-loop load generator at each concurrency, 32 passages per request. Every system's
scores on the first requests are checked against sentence-transformers on the same model.
Then the v2-m3-size model's single-request latency, and docs/benchmarks.md with plots.

All servers of a model run side by side and their points are interleaved (bench/compare.py),
so load from other processes on a shared machine is spread over all systems.

Profiles trade coverage for time on a 2-core machine (50-150 fp32 GFLOP/s, where one
32-passage request to an XLM-R-base-size model is ~1.7 TFLOP of useful work):

- `standard` (the default): MiniLM-L6 at concurrency 1, 4 and 16; XLM-R-base at 4 (the
  targets' point); six systems each; v2-m3 latency with ONNX int8.
- `quick`: MiniLM-L6 only, concurrency 1 and 4 (a smoke run).
- `full`: both models at 1, 4 and 16, every system, v2-m3 with torch fp32 too.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench import (
    agreement,
    compare,
    cpuload,
    fixtures,
    gemm,
    machine,
    peers,
    reference,
    report,
    servers,
)
from bench.flops import FORMULA, EncoderShape
from bench.workload import Request, make_requests
from rerankd.engine.cpu import cpu_flags, has_bf16

RESULTS = Path(__file__).resolve().parent / "results"
MAX_LENGTH = 512
logger = logging.getLogger("bench")

PEERS = ("tutorial", "infinity-torch", "infinity-optimum-int8", "xinference")
RERANKD = ("rerankd-torch-fp32", "rerankd-onnx-fp32", "rerankd-onnx-int8", "rerankd-torch-bf16")


@dataclass(frozen=True)
class Profile:
    concurrency: dict[str, tuple[int, ...]]  # model -> concurrency levels
    systems: tuple[str, ...]
    checked_requests: dict[str, int]  # model -> requests in the accuracy check
    v2m3_modes: tuple[str, ...]
    rounds: int = 3  # at most this many requests per client at a point ...
    point_seconds: float = 30.0  # ... and no new request after this


PROFILES = {
    "standard": Profile(
        {"minilm-l6": (1, 4, 16), "xlmr-base": (4,)},
        PEERS + RERANKD,
        {"minilm-l6": 4, "xlmr-base": 2},
        ("rerankd-onnx-int8",),
    ),
    "quick": Profile(
        {"minilm-l6": (1, 4)}, PEERS + RERANKD, {"minilm-l6": 4}, (), rounds=1, point_seconds=0
    ),
    "full": Profile(
        {"minilm-l6": (1, 4, 16), "xlmr-base": (1, 4, 16)},
        PEERS[:2] + ("infinity-optimum-fp32",) + PEERS[2:] + RERANKD,
        {"minilm-l6": 4, "xlmr-base": 2},
        ("rerankd-torch-fp32", "rerankd-onnx-int8"),
    ),
}


def accuracy(seen: dict[str, list[list[float]]], expected: list[list[float]]) -> dict | None:
    """Largest deviation over every observation; Spearman over the first one of each request."""
    if not seen:
        return None
    deviation, ours, theirs = 0.0, [], []
    for index, observations in seen.items():
        want = expected[int(index)]
        for scores in observations:
            deviation = max(deviation, agreement.max_deviation(scores, want))
        ours.extend(observations[0])
        theirs.extend(want)
    return {
        "max_deviation": deviation,
        "spearman": round(agreement.spearman(ours, theirs), 4),
        "pairs": len(ours),
    }


def bench_model(name: str, profile: Profile, systems: list[str]) -> dict[str, object]:
    model_dir = fixtures.model_dir(name)
    levels = profile.concurrency[name]
    count = max(levels) * profile.rounds + 1
    requests = make_requests(count)
    shape = EncoderShape.from_dir(model_dir)
    lengths = _lengths(model_dir, requests)
    checked = profile.checked_requests[name]
    logger.info("%s: reference scores for %d requests", name, checked)
    expected = reference.scores(model_dir, requests[:checked], MAX_LENGTH)
    logger.info("%s: starting %s", name, ", ".join(systems))
    point = compare.Point(
        requests, lengths, shape, 0, profile.point_seconds, profile.checked_requests[name]
    )
    entries = []
    for entry in compare.compare(systems, model_dir, levels, point, profile.rounds):
        entries.append({**entry.as_dict(), "accuracy": accuracy(entry.scores, expected)})
    flat = [n for request in lengths for n in request]
    return {
        "model": name,
        "reference": fixtures.RECIPES[name].reference,
        "weights_mb": round(fixtures.weights_bytes(model_dir) / 2**20, 1),
        "layer_params": shape.layer_params,
        "real_tokens_per_pair": round(sum(flat) / len(flat), 1),
        "padding_factor": round(sum(max(r) * len(r) for r in lengths) / sum(flat), 2),
        "systems": entries,
    }


def _lengths(model_dir: Path, requests: list[Request]) -> list[list[int]]:
    from bench.engine_bench import real_lengths

    return real_lengths(model_dir, requests)


def v2m3_latency(modes: tuple[str, ...]) -> list[dict[str, object]]:
    """Latency of one 32-passage request to a bge-reranker-v2-m3-size model, per mode."""
    model_dir = fixtures.model_dir("v2m3-arch")
    request = make_requests(1)
    tokens = sum(_lengths(model_dir, request)[0])
    rows = []
    for mode in modes:
        once = {"concurrency": 1, "max_requests": 1, "max_seconds": 0.0}
        try:
            with servers.serve(servers.SYSTEMS[mode], model_dir, ready_timeout=1800) as server:
                compare.run_once(server, make_requests(1, compare.WARMUP), **once)
                result = compare.run_once(server, request, **once)
        except (RuntimeError, TimeoutError, OSError) as exc:
            rows.append({"system": mode, "failed": f"{type(exc).__name__}: {str(exc)[-500:]}"})
            continue
        rows.append(
            {
                "system": mode,
                "latency_s": round(result.latencies[0], 2) if result.latencies else None,
                "errors": result.errors,
                "tokens": tokens,
                "startup_s": round(server.startup_s, 1),
                "peak_rss_mb": round(result.peak_rss_bytes / 2**20, 1),
            }
        )
    return rows


def merge(old: dict, new: dict) -> dict:
    """`old` with the systems measured in `new` replaced (or added); the rest kept as it was."""
    merged = {**old, "updates": [*old.get("updates", []), new["machine"]["date"]]}
    merged["duration_s"] = old["duration_s"] + new["duration_s"]
    models = {m["model"]: m for m in old["models"]}
    for model in new["models"]:
        if model["model"] not in models:
            models[model["model"]] = model
            continue
        entries = {e["system"]: e for e in models[model["model"]]["systems"]}
        entries.update({e["system"]: e for e in model["systems"]})
        order = [s for s in servers.SYSTEMS if s in entries]
        models[model["model"]]["systems"] = [entries[s] for s in order]
    merged["models"] = list(models.values())
    v2m3 = {row["system"]: row for row in [*old.get("v2m3", []), *new.get("v2m3", [])]}
    merged["v2m3"] = list(v2m3.values())
    return merged


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="standard")
    parser.add_argument(
        "--systems", nargs="+", choices=sorted(servers.SYSTEMS), help="instead of the profile's"
    )
    parser.add_argument("--models", nargs="+", help="a subset of the profile's models")
    parser.add_argument("--quiet-wait", type=float, default=60.0, help="max wait for idle CPU")
    parser.add_argument("--out", type=Path, default=RESULTS / "run_all.json")
    parser.add_argument("--no-report", action="store_true", help="skip docs/benchmarks.md")
    parser.add_argument(
        "--update", action="store_true", help="merge into --out, replacing only the systems run"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # SIGTERM unwinds like Ctrl-C, so every server started so far is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    profile = PROFILES[args.profile]
    if args.models:
        levels = {m: v for m, v in profile.concurrency.items() if m in args.models}
        profile = replace(profile, concurrency=levels)
    systems = list(args.systems or profile.systems)
    if not servers.rerankd_available():
        logger.warning("`python -m rerankd serve` is not available: rerankd modes skipped")
        systems = [s for s in systems if not s.startswith("rerankd")]
    if not has_bf16(cpu_flags()):
        systems = [s for s in systems if not s.endswith("bf16")]  # no bf16 unit: refused
    if any(s.startswith("infinity") for s in systems):
        peers.ensure_infinity_venv()
    if "xinference" in systems:
        peers.ensure_xinference_venv()
    for name in (*profile.concurrency, *(["v2m3-arch"] if profile.v2m3_modes else [])):
        fixtures.model_dir(name)
    foreign = cpuload.wait_for_quiet(args.quiet_wait)
    results: dict[str, object] = {
        "profile": args.profile,
        "machine": machine.describe(),
        "foreign_cores_at_start": round(foreign, 2),
        "threads": servers.THREADS,
        "max_batch_tokens": "each backend's default",
        "max_length": MAX_LENGTH,
        "flops_formula": FORMULA,
        "gemm": gemm.measure(servers.THREADS),
        "models": [bench_model(name, profile, systems) for name in profile.concurrency],
    }
    v2m3_modes = tuple(m for m in profile.v2m3_modes if m in systems)
    results["v2m3"] = v2m3_latency(v2m3_modes) if v2m3_modes else []
    results["duration_s"] = round(time.monotonic() - started, 1)
    if args.update and args.out.is_file():
        results = merge(json.loads(args.out.read_text(encoding="utf-8")), results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    logger.info("wrote %s after %.0f s", args.out, results["duration_s"])
    if not args.no_report:
        logger.info("wrote %s", report.write(results))
    return results


if __name__ == "__main__":
    main()
