"""Instructions on every rerank route: accepted where the model takes one, a 400 otherwise."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import ServerProcess, run_server


@pytest.fixture(scope="module")
def server(bert_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--model", f"{bert_model}=tiny-bert", "--max-length", "128"]
    with run_server(args, log_dir=tmp_path_factory.mktemp("instructions")) as running:
        yield running


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/rerank", {"query": "q", "documents": ["a", "b"], "instruction": "Find answers"}),
        ("/rerank", {"query": "q", "documents": ["a", "b"], "instruct": "Find answers"}),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "instruction": "Find answers"}),
        ("/v2/rerank", {"query": "q", "documents": ["a"], "instruct": "Find answers"}),
        (
            "/batch_rerank",
            {"queries": [{"query": "q", "documents": ["a"]}], "instruction": "Find answers"},
        ),
    ],
)
def test_an_instruction_to_a_cross_encoder_is_a_400_naming_the_model(
    server: ServerProcess, path: str, body: dict
) -> None:
    with server.client() as client:
        response = client.post(path, json=body)
        assert response.status_code == 400, response.text
        assert "'tiny-bert'" in response.text and "takes no instruction" in response.text
        # The same request without the instruction is served.
        body = {k: v for k, v in body.items() if k not in ("instruction", "instruct")}
        assert client.post(path, json=body).status_code == 200


def test_an_instruction_must_be_a_string(server: ServerProcess) -> None:
    with server.client() as client:
        response = client.post("/rerank", json={"query": "q", "documents": ["a"], "instruction": 3})
    assert response.status_code in (400, 422)
    assert "instruction" in response.text


def test_an_unknown_family_fails_at_start_listing_the_families(
    bert_model: Path, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rerankd", "serve", "--model", str(bert_model), "--family", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "nope" in message
    for family in ("cross-encoder", "bi-encoder", "qwen3-reranker", "bge-reranker-gemma"):
        assert family in message


def test_the_cli_lists_the_families() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rerankd", "families"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "qwen3-reranker" in result.stdout and "takes an instruction" in result.stdout
