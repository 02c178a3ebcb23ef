"""`rerankd calibrate` end to end on generated judged data: it lowers held-out ECE, the map is
monotone (the ranking cannot change), the file reads back, and bad files are refused by name."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rerankd.calibration import CalibrationError, ModelIdentity, check_for, load_calibration
from rerankd.calibration.fit import Labeled, brier, ece, fit, log_loss
from rerankd.cli import app
from rerankd.evaluation.synthetic import keyword_task, write_jsonl
from rerankd.reranker import Reranker

PNG = b"\x89PNG\r\n\x1a\n"


def calibrate(*args: str) -> str:
    result = CliRunner().invoke(app, ["calibrate", *args], env={"COLUMNS": "200"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.stderr
    return result.stdout


def graded(records: list[dict]) -> list[dict]:
    """The same queries with graded judgments: 2 for the answer, 0 else; every third query
    with no relevant document at all (kept: its negatives teach calibration too)."""
    out = []
    for n, record in enumerate(records):
        grades = [0] * len(record["documents"])
        if n % 3:
            grades[record["relevant"][0]] = 2
        out.append(
            {"query": record["query"], "documents": record["documents"], "relevance": grades}
        )
    return out


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(keyword_task(60, seed=11), tmp_path_factory.mktemp("cal") / "judged.jsonl")


@pytest.fixture(scope="module")
def builtin_calibration(judged: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cal-out") / "calibration.json"
    shown = calibrate(
        "--model", "builtin", "--data", str(judged), "--output", str(out), "--threads", "1"
    )
    assert "uncalibrated" in shown and "platt" in shown and "isotonic" in shown
    return out


def test_calibration_lowers_held_out_ece_and_writes_a_small_versioned_file(
    builtin_calibration: Path,
) -> None:
    data = json.loads(builtin_calibration.read_text())
    assert data["format"] == "rerankd-calibration" and data["version"] == 2
    assert data["method"] in ("platt", "isotonic") and data["score"] == "raw"
    assert data["model"]["family"] == "bi-encoder" and data["model"]["revision"].startswith(
        "sha256:"
    )
    assert data["data"]["pairs"] == 600 and data["data"]["hash"].startswith("sha256:")
    before, after = data["metrics"]["before"], data["metrics"]["after"]
    print(f"builtin, held-out ECE {before['ece']:.4f} -> {after['ece']:.4f}, "
          f"Brier {before['brier']:.4f} -> {after['brier']:.4f}")  # fmt: skip
    assert after["ece"] < before["ece"] / 2 and after["brier"] < before["brier"]
    assert data["metrics"]["bins"] >= 10
    chosen = data["metrics"]["candidates"][data["method"]]
    assert chosen == after
    assert all(after["log_loss"] <= c["log_loss"] for c in data["metrics"]["candidates"].values())
    assert builtin_calibration.with_suffix(".png").read_bytes()[:8] == PNG
    assert builtin_calibration.stat().st_size < 20_000


def test_the_served_map_is_monotone_and_keeps_the_ranking(builtin_calibration: Path) -> None:
    calibration = load_calibration(builtin_calibration)
    raw = np.linspace(-1.5, 1.5, 2001)
    mapped = calibration.apply(raw)
    assert np.all(np.diff(mapped) >= 0) and mapped.min() >= 0 and mapped.max() <= 1
    reranker = Reranker("builtin", threads=1)
    record = keyword_task(1, seed=99)[0]
    scores = reranker.score([(record["query"], d) for d in record["documents"]], raw=True)
    calibrated = calibration.apply(scores)
    assert np.all(np.argsort(-scores, kind="stable") == np.lexsort((-scores, -calibrated)))


def test_graded_judgments_and_queries_without_a_relevant_document(
    judged: Path, tmp_path: Path
) -> None:
    records = [json.loads(line) for line in judged.read_text().splitlines()]
    data = write_jsonl(graded(records), tmp_path / "graded.jsonl")
    out = tmp_path / "iso.json"
    calibrate("--model", "builtin", "--data", str(data), "--output", str(out), "--method", "isotonic",
              "--relevant-grade", "2", "--threads", "1", "--bins", "10")  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved["method"] == "isotonic" and list(saved["metrics"]["candidates"]) == ["isotonic"]
    assert saved["data"]["queries"] == 60 and saved["data"]["relevant"] == 40
    xs, ys = saved["parameters"]["x"], saved["parameters"]["y"]
    assert xs == sorted(set(xs)) and ys == sorted(ys)


def test_a_beir_folder_calibrates_like_its_jsonl(
    judged: Path, builtin_calibration: Path, tmp_path: Path
) -> None:
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    records = [json.loads(line) for line in judged.read_text().splitlines()]
    corpus, runs, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for n, record in enumerate(records):
        for i, text in enumerate(record["documents"]):
            corpus.append({"_id": f"d{n}-{i}", "title": "", "text": text})
            runs.append(f"q{n} Q0 d{n}-{i} {i + 1} {100 - i} bm25")
        qrels.append(f"q{n}\td{n}-{record['relevant'][0]}\t1")
    write_jsonl(corpus, root / "corpus.jsonl")
    write_jsonl([{"_id": f"q{n}", "text": r["query"]} for n, r in enumerate(records)],
                root / "queries.jsonl")  # fmt: skip
    (root / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    (tmp_path / "run.txt").write_text("\n".join(runs) + "\n")
    out = tmp_path / "beir.json"
    calibrate("--model", "builtin", "--data", str(root), "--run", str(tmp_path / "run.txt"),
              "--output", str(out), "--threads", "1")  # fmt: skip
    beir = json.loads(out.read_text())
    print(f"BEIR layout, held-out ECE {beir['metrics']['before']['ece']:.4f} -> "
          f"{beir['metrics']['after']['ece']:.4f}")  # fmt: skip
    assert beir["data"]["pairs"] == 600 and beir["data"]["relevant"] == 60
    assert beir["data"]["hash"] == json.loads(builtin_calibration.read_text())["data"]["hash"]
    assert beir["metrics"]["after"]["ece"] < beir["metrics"]["before"]["ece"]


def test_metrics_match_their_definitions() -> None:
    p = np.array([0.1, 0.1, 0.9, 0.9])
    y = np.array([0, 1, 1, 1])
    assert brier(p, y) == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    assert log_loss(p, y) == pytest.approx(-(np.log(0.9) + np.log(0.1) + 2 * np.log(0.9)) / 4)
    # Two non-empty bins: |0.1 - 0.5| and |0.9 - 1.0|, each half of the pairs.
    assert ece(p, y, bins=10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)


def test_fit_refuses_scores_that_fall_with_relevance() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    raw = -labels * 3.0 + rng.normal(0, 0.1, 400)
    data = Labeled(raw, 1 / (1 + np.exp(-raw)), labels, np.arange(400) // 10)
    identity = ModelIdentity("m", "r", "cross-encoder", "s")
    with pytest.raises(ValueError, match="do not rise"):
        fit(data, identity, methods=("platt",))
    iso = fit(data, identity, methods=("isotonic",)).calibration  # flat, but never reversed
    assert np.all(np.diff(iso.apply(np.sort(raw))) >= 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: "{not json", "not a readable JSON"),
        (lambda d: {**d, "format": "other"}, "'format'"),
        (lambda d: {**d, "version": 99}, "version 99"),
        (lambda d: {**d, "method": "temperature"}, "'method'"),
        (lambda d: {**d, "model": {"name": "x"}}, "name the model"),
        (lambda d: {**d, "method": "platt", "parameters": {"a": -1.0, "b": 0.0}}, "reverse"),
        (lambda d: {**d, "method": "platt", "parameters": {"a": "1", "b": 0.0}}, "finite"),
        (lambda d: {**d, "method": "isotonic", "parameters": {"x": [0, 0], "y": [0, 1]}},
         "strictly increasing"),
        (lambda d: {**d, "method": "isotonic", "parameters": {"x": [0, 1], "y": [0.5, 0.2]}},
         "non-decreasing"),
        (lambda d: {**d, "method": "isotonic", "parameters": {"x": [0, 1], "y": [0, 1.5]}},
         "non-decreasing"),
    ],
)  # fmt: skip
def test_malformed_files_are_refused_naming_the_file(
    builtin_calibration: Path, tmp_path: Path, change, message: str
) -> None:
    good = json.loads(builtin_calibration.read_text())
    bad = tmp_path / "bad-calibration.json"
    changed = change(good)
    bad.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(CalibrationError, match=message) as caught:
        load_calibration(bad)
    assert str(bad) in str(caught.value)


def test_a_calibration_for_other_weights_is_refused(builtin_calibration: Path) -> None:
    calibration = load_calibration(builtin_calibration)
    same = dataclasses.replace(calibration.model, name="renamed")
    assert check_for(calibration, same) is calibration  # a served name is not the weights
    # The same weights with other settings files (a pooling, a temperature): another scale.
    retuned = dataclasses.replace(calibration.model, settings="sha256:0123456789abcdef")
    with pytest.raises(CalibrationError, match="settings sha256:0123456789abcdef"):
        check_for(calibration, retuned)
    other = ModelIdentity("tiny-bert", "sha256:0123456789abcdef", "cross-encoder", "s")
    with pytest.raises(CalibrationError, match="not for tiny-bert") as caught:
        check_for(calibration, other)
    assert str(builtin_calibration) in str(caught.value)
    with pytest.raises(CalibrationError, match="no such file"):
        load_calibration(builtin_calibration.parent / "missing.json")


def test_files_written_beside_the_weights_keep_the_settings_hash(tmp_path: Path) -> None:
    """A calibration (or a fine-tuning summary) beside the weights must not change the identity
    it is checked against; a config change must."""
    from rerankd.calibration.model import FILENAME
    from rerankd.finetune.card import SUMMARY
    from rerankd.models import settings_hash

    (tmp_path / "config.json").write_text('{"hidden_act": "gelu"}')
    before = settings_hash(tmp_path)
    (tmp_path / FILENAME).write_text("{}")
    (tmp_path / SUMMARY).write_text("{}")
    assert settings_hash(tmp_path) == before
    (tmp_path / "config.json").write_text('{"hidden_act": "relu"}')
    assert settings_hash(tmp_path) != before
