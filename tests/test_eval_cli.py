"""`rerankd eval` end to end: real models, a real server, the report's three outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerankd.cli import app
from rerankd.evaluation.synthetic import keyword_task, write_jsonl
from tests.server import ServerProcess, run_server


def run_eval(*args: str) -> dict:
    result = CliRunner().invoke(app, ["eval", *args], env={"COLUMNS": "200"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.stderr
    return {"stdout": result.stdout, "stderr": result.stderr}


@pytest.fixture(scope="module")
def keyword_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(keyword_task(12, seed=3), tmp_path_factory.mktemp("eval") / "keywords.jsonl")


def test_in_process_and_server_give_the_same_metrics(
    bert_model: Path, keyword_data: Path, tmp_path: Path, shared_bert_server: ServerProcess
) -> None:
    """Against the session's tiny-BERT server (10 documents a query, under its limit of 20)."""
    out = tmp_path / "report.json"
    server = shared_bert_server
    shown = run_eval(
        str(keyword_data), "--model", str(bert_model), "--model", server.url, "--json", str(out)
    )
    report = json.loads(out.read_text())
    local, remote = report["models"]["tiny-bert (torch)"], report["models"][server.url]
    assert set(local) == {"ndcg@10", "mrr@10", "map", "recall@10"}
    assert local == pytest.approx(remote, abs=1e-9)
    (agreement,) = report["agreement"]
    assert agreement["other"] == server.url and agreement["max_abs_deviation"] < 1e-5
    assert agreement["top1_agreement"] == 1.0
    assert "baseline (candidate order)" in shown["stdout"] and server.url in shown["stdout"]


def test_baseline_row_is_the_candidate_order(keyword_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    run_eval(str(keyword_data), "--model", "builtin", "--metric", "mrr@10", "--json", str(out))
    records = [json.loads(line) for line in keyword_data.read_text().splitlines()]
    expected = sum(1 / (r["relevant"][0] + 1) for r in records) / len(records)
    report = json.loads(out.read_text())
    assert report["models"]["baseline"]["mrr@10"] == pytest.approx(expected)
    assert report["queries"] == 12 and report["pairs"] == 120
    assert report["timing"]["builtin (torch)"]["queries_per_second"] > 0


def test_modes_side_by_side_with_agreement_and_plots(
    bert_model: Path, keyword_data: Path, tmp_path: Path
) -> None:
    out, plots = tmp_path / "report.json", tmp_path / "plots"
    run_eval(
        str(keyword_data),
        "--model", str(bert_model),
        "--mode", "torch", "--mode", "onnx", "--mode", "onnx:int8",
        "--json", str(out), "--plots", str(plots),
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert list(report["models"]) == [
        "baseline",
        "tiny-bert (torch)",
        "tiny-bert (onnx)",
        "tiny-bert (onnx int8)",
    ]
    fp32, int8 = report["agreement"]
    assert fp32["other"] == "tiny-bert (onnx)" and fp32["max_abs_deviation"] < 1e-4
    assert fp32["spearman"] > 0.999
    assert int8["other"] == "tiny-bert (onnx int8)" and 0 < int8["max_abs_deviation"] < 0.5
    for metric in ("ndcg_at_10", "mrr_at_10", "map", "recall_at_10"):
        assert (plots / f"{metric}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_beir_with_a_run_file_and_with_the_builtin_retriever(tmp_path: Path) -> None:
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    records = keyword_task(6, seed=4)
    corpus, runs, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for n, record in enumerate(records):
        for i, text in enumerate(record["documents"]):
            corpus.append({"_id": f"d{n}-{i}", "title": "", "text": text})
            runs.append(f"q{n} Q0 d{n}-{i} {i + 1} {100 - i} bm25")
        qrels.append(f"q{n}\td{n}-{record['relevant'][0]}\t1")
    write_jsonl(corpus, root / "corpus.jsonl")
    write_jsonl(
        [{"_id": f"q{n}", "text": r["query"]} for n, r in enumerate(records)],
        root / "queries.jsonl",
    )
    (root / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    (tmp_path / "run.txt").write_text("\n".join(runs) + "\n")
    expected = sum(1 / (r["relevant"][0] + 1) for r in records) / len(records)

    out = tmp_path / "with-run.json"
    run_eval(
        str(root), "--run", str(tmp_path / "run.txt"), "--model", "builtin", "--json", str(out)
    )
    report = json.loads(out.read_text())
    assert report["models"]["baseline"]["mrr@10"] == pytest.approx(expected)
    assert report["pairs"] == 60

    out = tmp_path / "retrieved.json"
    run_eval(str(root), "--top-k", "5", "--model", "builtin", "--json", str(out))
    report = json.loads(out.read_text())
    assert report["queries"] == 6 and report["pairs"] == 30
    assert 0 < report["models"]["baseline"]["recall@10"] <= 1


def test_plots_draw_the_reliability_diagram_and_the_report_measures_calibration(
    keyword_data: Path, tmp_path: Path
) -> None:
    """The built-in model's own scores against the same model served with a calibration
    fitted on other queries: the report's ECE and Brier say the served scores are the better
    probabilities, and reliability.png draws both."""
    judged = write_jsonl(keyword_task(40, seed=21), tmp_path / "judged.jsonl")
    fitted = tmp_path / "calibration.json"
    calibrate = CliRunner().invoke(
        app,
        ["calibrate", "--model", "builtin", "--data", str(judged), "--output", str(fitted),
         "--method", "platt", "--threads", "1"],
    )  # fmt: skip
    assert calibrate.exit_code == 0, calibrate.stderr
    out, plots = tmp_path / "report.json", tmp_path / "plots"
    args = ["--model", "builtin", "--calibration", str(fitted), "--threads", "1"]
    with run_server(args, log_dir=tmp_path) as server:
        run_eval(
            str(keyword_data), "--model", "builtin", "--model", server.url,
            "--json", str(out), "--plots", str(plots), "--metric", "mrr@10",
        )  # fmt: skip
    report = json.loads(out.read_text())
    own, served = report["calibration"]["builtin (torch)"], report["calibration"][server.url]
    assert set(own) == {"ece", "brier", "log_loss"} and "baseline" not in report["calibration"]
    assert served["ece"] < own["ece"] and served["brier"] < own["brier"]
    assert report["models"]["builtin (torch)"] == report["models"][server.url]  # same ranking
    assert (plots / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
