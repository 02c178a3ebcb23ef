"""`rerankd finetune` on a generated task: it learns, it is repeatable, it resumes, and the
directory it writes is served by a real `rerankd serve` with sentence-transformers' scores."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from rerankd.cli import app
from rerankd.devtools.synthetic import build_bert_cross_encoder
from rerankd.evaluation.synthetic import as_triples, keyword_task, write_jsonl
from rerankd.finetune.card import SUMMARY
from tests.server import run_server

# Training on a busy shared machine can take several times its ~1 minute; 300 s is too tight.
pytestmark = pytest.mark.timeout(900)

# One thread: the shared test machine is oversubscribed, where two OpenMP threads per
# process run far slower than one.
FAST = ["--threads", "1", "--batch-size", "8", "--learning-rate", "1e-3", "--seed", "7"]


def finetune(*args: str) -> str:
    result = CliRunner().invoke(app, ["finetune", *args], env={"COLUMNS": "200"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.stderr
    return result.stderr


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("finetune")
    return {
        "base": build_bert_cross_encoder(
            root / "tiny-base", hidden_size=64, layers=2, initializer_range=0.02, seed=3
        ),
        "train": write_jsonl(as_triples(keyword_task(300, seed=1, hard=1)), root / "train.jsonl"),
        "held": write_jsonl(keyword_task(50, seed=2, hard=1), root / "held.jsonl"),
        "root": root,
    }


@pytest.fixture(scope="module")
def tuned(task: dict[str, Path]) -> Path:
    out = task["root"] / "tuned"
    finetune(
        "--model", str(task["base"]), "--data", str(task["train"]), "--eval", str(task["held"]),
        "--output", str(out), "--epochs", "2", *FAST,
    )  # fmt: skip
    return out


def test_fine_tuning_raises_held_out_mrr_well_above_the_start(tuned: Path) -> None:
    summary = json.loads((tuned / SUMMARY).read_text())
    before, after = summary["before"]["mrr@10"], summary["after"]["mrr@10"]
    print(f"held-out MRR@10: {before:.3f} -> {after:.3f}")
    assert before < 0.45  # about chance (0.29 for one relevant passage among 10)
    assert after > before + 0.25 and after > 0.6
    assert summary["steps"] == 76  # ceil(300 / 8) per epoch, two epochs
    card = (tuned / "README.md").read_text()
    assert "base_model:" in card and "| mrr@10 |" in card and "train.jsonl" in card


def test_served_scores_equal_sentence_transformers(tuned: Path, tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    record = keyword_task(1, seed=9, hard=1)[0]
    expected = CrossEncoder(str(tuned), device="cpu").predict(
        [(record["query"], d) for d in record["documents"]], show_progress_bar=False
    )
    with run_server(["--model", str(tuned)], log_dir=tmp_path) as server:
        body = {"query": record["query"], "documents": record["documents"]}
        response = httpx.post(server.url + "/rerank", json=body, timeout=60)
    assert response.status_code == 200
    served = np.zeros(len(record["documents"]))
    for result in response.json()["results"]:
        served[result["index"]] = result["score"]
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert np.ptp(served) > 0.05  # a trained model, not a constant


def weights_digest(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_same_seed_same_weights_and_resume_continues(task: dict[str, Path]) -> None:
    small = write_jsonl(as_triples(keyword_task(24, seed=5, hard=1)), task["root"] / "small.jsonl")
    common = ["--model", str(task["base"]), "--data", str(small), *FAST, "--save-steps", "3"]
    first, second = task["root"] / "a", task["root"] / "b"
    finetune(*common, "--output", str(first), "--epochs", "1")
    finetune(*common, "--output", str(second), "--epochs", "1")
    assert weights_digest(first) == weights_digest(second)
    assert sorted(p.name for p in (first / "checkpoints").iterdir()) == ["checkpoint-3"]
    finetune(*common, "--output", str(first), "--epochs", "2", "--resume")
    summary = json.loads((first / SUMMARY).read_text())
    assert summary["steps"] == 6  # three more steps on top of checkpoint-3
    assert weights_digest(first) != weights_digest(second)


def test_mining_adds_the_bi_encoders_nearest_non_positive(task: dict[str, Path]) -> None:
    from rerankd.finetune.data import TrainQuery, TrainSet
    from rerankd.finetune.mining import mine_hard_negatives

    corpus = [
        "Paris is the capital and largest city of France.",
        "Lyon is a large city in France, known for its food.",
        "Bananas are yellow and grow in tropical climates.",
        "The stock market closed higher on Tuesday.",
    ]
    train = TrainSet("t", [TrainQuery("What is the capital of France?", [corpus[0]])], corpus)
    assert mine_hard_negatives(train, 1) == 1
    assert train.queries[0].negatives == [corpus[1]]
