"""Bad inputs to `rerankd eval` and `rerankd finetune`: a clear message naming the file and
line, exit code 2, no traceback, and no model loaded first.

The model named in each command does not exist: if the data were checked after loading it,
the message would be about the model instead. Most cases run the command line in process
(typer's runner; an escaped exception would show as `result.exception`); two run the real
`python -m rerankd` to see what a shell sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

MISSING_MODEL = "/nonexistent/model-that-would-fail-to-load"


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def rerankd(*args: str) -> Outcome:
    """The command line in process; any exception other than a clean exit fails the test."""
    from typer.testing import CliRunner

    from rerankd.cli import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr)


def rerankd_process(*args: str) -> Outcome:
    done = subprocess.run(
        [sys.executable, "-m", "rerankd", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"query": "q", "documents": ["a", "b"], "relevant": [1]})


def beir(root: Path, qrels: list[str], corpus_extra: list[str] = ()) -> Path:
    write(
        root / "corpus.jsonl",
        [
            json.dumps({"_id": "d1", "title": "", "text": "alpha"}),
            json.dumps({"_id": "d2", "text": "beta"}),
            *corpus_extra,
        ],
    )
    write(root / "queries.jsonl", [json.dumps({"_id": "q1", "text": "alpha?"})])
    write(root / "qrels" / "test.tsv", ["query-id\tcorpus-id\tscore", *qrels])
    return root


def assert_input_error(result: Outcome, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert "model-that-would-fail" not in result.stderr  # the data was checked first


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    assert_input_error(
        rerankd_process("eval", str(path), "--model", MISSING_MODEL), f"{path}: no such file"
    )


def test_a_missing_beir_folder_is_named_not_the_run(tmp_path: Path) -> None:
    folder, run = tmp_path / "scifact", tmp_path / "run.trec"
    run.write_text("1 Q0 d1 1 1.0 bm25\n", encoding="utf-8")
    result = rerankd_process("eval", str(folder), "--run", str(run), "--model", MISSING_MODEL)
    assert_input_error(result, f"{folder}: no such file or directory", "a BEIR directory")
    assert "--run goes with" not in result.stderr


def test_malformed_line_is_named_by_number(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.jsonl", [GOOD, "", '{"query": "q", "documents": ["a"], "relevant": [0]', GOOD]
    )
    assert_input_error(
        rerankd_process("eval", str(path), "--model", MISSING_MODEL), f"{path}:3:", "not valid JSON"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            {"query": "q", "documents": ["a", "b"], "relevant": [2]},
            "names document 2, but there are 2",
        ),
        ({"query": "", "documents": ["a"], "relevant": [0]}, "'query' must be a non-empty string"),
        ({"query": "q", "documents": [], "relevant": []}, "'documents' must be a non-empty list"),
        ({"query": "q", "documents": ["a", 3], "relevant": [0]}, "documents[1]"),
        ({"query": "q", "documents": ["a"]}, "needs 'relevant'"),
        ({"query": "q", "documents": ["a", "b"], "relevance": [1]}, "one grade for each of the 2"),
    ],
)
def test_bad_records(tmp_path: Path, line: dict, message: str) -> None:
    path = write(tmp_path / "d.jsonl", [GOOD, json.dumps(line)])
    assert_input_error(rerankd("eval", str(path), "--model", MISSING_MODEL), f"{path}:2:", message)


def test_empty_file_and_nothing_relevant(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.jsonl", [""])
    assert_input_error(rerankd("eval", str(empty), "--model", MISSING_MODEL), "the file is empty")
    unjudged = write(
        tmp_path / "none.jsonl", [json.dumps({"query": "q", "documents": ["a"], "relevant": []})]
    )
    assert_input_error(
        rerankd("eval", str(unjudged), "--model", MISSING_MODEL), "no query has a relevant document"
    )


def test_qrel_naming_an_unknown_document(tmp_path: Path) -> None:
    root = beir(tmp_path / "set", ["q1\td1\t1", "q1\td9\t1"])
    run = write(tmp_path / "run.txt", ["q1 Q0 d1 1 2.0 bm25"])
    result = rerankd("eval", str(root), "--run", str(run), "--model", MISSING_MODEL)
    assert_input_error(result, "test.tsv:3:", "document 'd9' is not in corpus.jsonl")


def test_run_naming_an_unknown_document_or_malformed(tmp_path: Path) -> None:
    root = beir(tmp_path / "set", ["q1\td1\t1"])
    run = write(tmp_path / "run.txt", ["q1 Q0 d1 1 2.0 bm25", "q1 Q0 d7 2 1.0 bm25"])
    assert_input_error(
        rerankd("eval", str(root), "--run", str(run), "--model", MISSING_MODEL),
        "run.txt:2:",
        "'d7'",
    )
    bad = write(tmp_path / "bad.txt", ["q1 Q0 d1 1 high bm25"])
    assert_input_error(
        rerankd("eval", str(root), "--run", str(bad), "--model", MISSING_MODEL),
        "bad.txt:1:",
        "not a number",
    )


def test_empty_split_and_unknown_split(tmp_path: Path) -> None:
    root = beir(tmp_path / "set", ["q1\td1\t0"])
    run = write(tmp_path / "run.txt", ["q1 Q0 d1 1 2.0 bm25"])
    assert_input_error(
        rerankd("eval", str(root), "--run", str(run), "--model", MISSING_MODEL),
        "the split is empty",
    )
    result = rerankd(
        "eval", str(root), "--run", str(run), "--split", "dev", "--model", MISSING_MODEL
    )
    assert_input_error(result, "dev.tsv", "no such split; qrels/ has test")


def test_unknown_metric_and_mode(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", [GOOD])
    assert_input_error(
        rerankd("eval", str(path), "--metric", "ndgc@10"), "unknown metric 'ndgc@10'"
    )
    result = rerankd("eval", str(path), "--model", MISSING_MODEL, "--mode", "torch:float16")
    assert_input_error(result, "refused on CPU")
    result = rerankd("eval", str(path), "--model", "builtin", "--mode", "tensorrt")
    assert (
        result.returncode == 2
        and "unknown backend 'tensorrt'" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_a_model_that_cannot_load_is_exit_2_too(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", [GOOD])
    result = rerankd("eval", str(path), "--model", MISSING_MODEL)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "model-that-would-fail" in result.stderr


def test_finetune_bad_training_data(tmp_path: Path) -> None:
    path = write(
        tmp_path / "train.jsonl",
        [json.dumps({"query": "q", "positive": "p"}), json.dumps({"query": "q"})],
    )
    result = rerankd(
        "finetune", "--model", MISSING_MODEL, "--data", str(path), "--output", str(tmp_path / "out")
    )
    assert_input_error(result, f"{path}:2:", "needs 'positive'")
    mixed = write(tmp_path / "mixed.jsonl", [json.dumps({"query": "q", "positive": "p"}), GOOD])
    result = rerankd(
        "finetune",
        "--model",
        MISSING_MODEL,
        "--data",
        str(mixed),
        "--output",
        str(tmp_path / "out"),
    )
    assert_input_error(result, f"{mixed}:2:", "mixes")


def test_finetune_bad_eval_data_and_options(tmp_path: Path) -> None:
    train = write(tmp_path / "train.jsonl", [json.dumps({"query": "q", "positive": "p"})])
    held = write(tmp_path / "held.jsonl", [GOOD, "{oops"])
    result = rerankd(
        "finetune",
        "--model",
        MISSING_MODEL,
        "--data",
        str(train),
        "--eval",
        str(held),
        "--output",
        str(tmp_path / "o"),
    )
    assert_input_error(result, f"{held}:2:", "not valid JSON")
    result = rerankd(
        "finetune",
        "--model",
        MISSING_MODEL,
        "--data",
        str(train),
        "--output",
        str(tmp_path / "o"),
        "--loss",
        "hinge",
    )
    assert_input_error(result, "unknown loss 'hinge'")
    result = rerankd(
        "finetune",
        "--model",
        MISSING_MODEL,
        "--data",
        str(train),
        "--output",
        str(tmp_path / "o"),
        "--precision",
        "bf16",
    )
    assert_input_error(result, "needs a CUDA device")
    result = rerankd(
        "finetune",
        "--model",
        MISSING_MODEL,
        "--data",
        str(train),
        "--output",
        str(tmp_path / "o"),
        "--resume",
    )
    assert_input_error(result, "no checkpoint to resume from")
