"""Issue 23: ECE, Brier and log-loss before and after `rerankd calibrate`, on held-out queries.

Two judged sets built like the tests' (rerankd.evaluation.synthetic.keyword_task: a keyword
query, 10 candidates, one relevant, 3 hard negatives): the rerankd eval JSONL, and a
public-format BEIR layout (corpus.jsonl, queries.jsonl, qrels/test.tsv, a TREC run) of other
queries. The built-in model is calibrated on each through the real CLI (auto: Platt or
isotonic by held-out log-loss); the figures are the held-out split's, as calibration.json
stores them.

    python -m bench.calibration_bench            # 60 queries per set
    python -m bench.calibration_bench --queries 120

Writes bench/results/calibration_bench.json (and the reliability diagrams beside it in
bench/.work/calibration/).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from bench import machine
from bench.fixtures import WORK
from rerankd.cli import app
from rerankd.evaluation.synthetic import keyword_task, write_jsonl

RESULTS = Path(__file__).resolve().parent / "results" / "calibration_bench.json"


def beir_layout(records: list[dict[str, Any]], root: Path) -> tuple[Path, Path]:
    """(the BEIR folder, its TREC run) holding `records`."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    corpus, runs, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for n, record in enumerate(records):
        for i, text in enumerate(record["documents"]):
            corpus.append({"_id": f"d{n}-{i}", "title": "", "text": text})
            runs.append(f"q{n} Q0 d{n}-{i} {i + 1} {100 - i} bm25")
        qrels += [f"q{n}\td{n}-{r}\t1" for r in record["relevant"]]
    write_jsonl(corpus, root / "corpus.jsonl")
    write_jsonl([{"_id": f"q{n}", "text": r["query"]} for n, r in enumerate(records)],
                root / "queries.jsonl")  # fmt: skip
    (root / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    run = root.parent / f"{root.name}-run.txt"
    run.write_text("\n".join(runs) + "\n", encoding="utf-8")
    return root, run


def calibrate(data: Path, out: Path, *extra: str) -> dict[str, Any]:
    args = ["calibrate", "--model", "builtin", "--data", str(data), "--output", str(out), *extra]
    result = CliRunner().invoke(app, args)
    if result.exit_code != 0:
        raise SystemExit(f"rerankd calibrate failed: {result.output}")
    saved: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return {
        "method": saved["method"],
        "queries": saved["data"]["queries"],
        "pairs": saved["data"]["pairs"],
        "held_out": {"before": saved["metrics"]["before"], "after": saved["metrics"]["after"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    root = WORK / "calibration"
    root.mkdir(parents=True, exist_ok=True)
    threads = ("--threads", str(args.threads))
    jsonl = write_jsonl(keyword_task(args.queries, seed=231), root / "judged.jsonl")
    folder, run = beir_layout(keyword_task(args.queries, seed=232), root / "beir")
    result = {
        "machine": machine.describe(),
        "model": "builtin (all-MiniLM-L6-v2, bi-encoder: (cos + 1) / 2 before calibration)",
        "jsonl": calibrate(jsonl, root / "jsonl-calibration.json", *threads),
        "beir": calibrate(folder, root / "beir-calibration.json", "--run", str(run), *threads),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
