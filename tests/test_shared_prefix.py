"""A request's instruction+query prefix runs once (torch): the same scores as running every
sequence whole (≤ 1e-5), fewer tokens run (in `usage` and `rerankd_shared_prefix_tokens`), and
a later request with the same prefix reuses its key/value cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from rerankd import Reranker
from rerankd.engine import LongDocPolicy
from rerankd.families.prefix import PrefixedSequence, shared_tokens
from tests.server import ServerProcess, metric, run_server
from tests.test_families_reference import stress_pairs

INSTRUCTION = "Given a question about fruit or phones, find the passages that answer it"
QUERY = "what is the capital of France"
DOCUMENTS = ["Paris is the capital of France.", "Bananas are yellow.", "Berlin is in Germany."]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def mxbai_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rerankd.devtools.synthetic_causal import build_mxbai_reranker

    return build_mxbai_reranker(tmp_path_factory.mktemp("mxbai") / "tiny-mxbai-rerank-base-v2")


def load(path: Path, **options: object) -> Reranker:
    return Reranker(path, max_length=256, threads=1, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("fixture", ["qwen3_reranker", "gemma_reranker", "mxbai_model"])
def test_shared_prefix_scores_equal_whole_sequences(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    path: Path = request.getfixturevalue(fixture)
    pairs = stress_pairs()
    shared, whole = load(path), load(path, share_prefix=False)
    assert shared.engine.family.share_prefix and not whole.engine.family.share_prefix
    for instruction in (None, INSTRUCTION):
        expected = whole.score(pairs, raw=True, instruction=instruction)
        assert (
            np.abs(shared.score(pairs, raw=True, instruction=instruction) - expected).max() < 1e-5
        )
    # Chunked long documents share the prefix too.
    policy = LongDocPolicy(strategy="chunk", max_chunks_per_doc=4, max_tokens_per_doc=40)
    long_pairs = [(QUERY, "Paris is the capital of France and a city of art. " * 12)] * 2
    got = shared.score(long_pairs, raw=True, policy=policy)
    assert np.abs(got - whole.score(long_pairs, raw=True, policy=policy)).max() < 1e-5


def test_the_plan_runs_the_prefix_once_and_a_later_request_reuses_it(
    qwen3_reranker: Path,
) -> None:
    shared, whole = load(qwen3_reranker), load(qwen3_reranker, share_prefix=False)
    policy = LongDocPolicy()
    plan = shared.engine.plan(QUERY, DOCUMENTS, policy, INSTRUCTION)
    full = whole.engine.plan(QUERY, DOCUMENTS, policy, INSTRUCTION)
    assert all(isinstance(item, PrefixedSequence) for item in plan.sequences)
    prefix = len(plan.sequences[0].prefix)  # type: ignore[attr-defined]
    assert prefix > 30
    assert plan.tokens == full.tokens - prefix * (len(DOCUMENTS) - 1)
    assert shared_tokens(plan.sequences) == prefix * (len(DOCUMENTS) - 1)

    caches = shared.engine.backend._head.prefix_caches  # type: ignore[attr-defined, union-attr]
    shared.score([(QUERY, d) for d in DOCUMENTS], instruction=INSTRUCTION)
    computed, hits = caches.computed_tokens, caches.hits
    shared.score([(QUERY, "Another passage about Paris.")], instruction=INSTRUCTION)
    assert caches.computed_tokens == computed and caches.hits == hits + 1
    shared.score([(QUERY, "Another passage about Paris.")], instruction="another instruction")
    assert caches.computed_tokens > computed


def test_the_prefix_cache_reads_no_deprecated_field(
    qwen3_reranker: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """transformers 5 logs (once per process) when `past_key_values` is read or passed."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from rerankd.families.prefix_cache import PrefixCaches, run_after_prefix

    body = AutoModelForCausalLM.from_pretrained(str(qwen3_reranker)).get_decoder().eval()
    hf_logging.warning_once.cache_clear()  # a message logged earlier in this process
    hf_logging.enable_propagation()
    try:
        with torch.no_grad():
            kv = PrefixCaches().get(body, torch.tensor([[1, 2, 3, 4]]))
            run_after_prefix(
                body, kv, torch.tensor([[5, 6], [7, 0]]), torch.tensor([[1, 1], [1, 0]])
            )
    finally:
        hf_logging.disable_propagation()
    assert not [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]


def test_onnx_runs_whole_sequences(qwen3_reranker: Path) -> None:
    onnx = load(qwen3_reranker, backend="onnx")
    assert not onnx.engine.family.share_prefix
    plan = onnx.engine.plan(QUERY, DOCUMENTS, LongDocPolicy(), None)
    assert not any(isinstance(item, PrefixedSequence) for item in plan.sequences)
    scores = onnx.score([(QUERY, d) for d in DOCUMENTS], raw=True, instruction=INSTRUCTION)
    shared = load(qwen3_reranker).score(
        [(QUERY, d) for d in DOCUMENTS], raw=True, instruction=INSTRUCTION
    )
    assert np.abs(scores - shared).max() < 1e-4


def test_the_families_command_says_where_the_prefix_is_shared() -> None:
    from typer.testing import CliRunner

    from rerankd.cli import app

    result = CliRunner().invoke(app, ["families"])
    assert result.exit_code == 0, result.output
    lines = {line.split(":")[0]: line for line in result.output.splitlines()}
    for family in ("qwen3-reranker", "bge-reranker-gemma", "mxbai-rerank-v2", "zerank"):
        assert "shared prefix: torch (CPU and CUDA" in lines[family]
        assert "ONNX Runtime runs whole sequences" in lines[family]
    assert "shared prefix: none: bidirectional attention" in lines["nemotron-rerank"]
    assert "shared prefix: not shared" in lines["qwen3-vl-reranker"]


@pytest.fixture(scope="module")
def server(
    qwen3_reranker: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    args = ["--model", f"{qwen3_reranker}=qwen3", "--threads", "1"]
    with run_server(args, log_dir=tmp_path_factory.mktemp("prefix")) as running:
        yield running


def test_usage_and_metric_count_the_prefix_once(
    server: ServerProcess, qwen3_reranker: Path
) -> None:
    whole = load(qwen3_reranker, share_prefix=False)
    full = whole.engine.plan(QUERY, DOCUMENTS, LongDocPolicy(), INSTRUCTION)
    shared = load(qwen3_reranker).engine.plan(QUERY, DOCUMENTS, LongDocPolicy(), INSTRUCTION)
    body = {"model": "qwen3", "query": QUERY, "documents": DOCUMENTS, "instruction": INSTRUCTION}
    response = httpx.post(f"{server.url}/rerank", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["tokens"] == shared.tokens < full.tokens
    scraped = httpx.get(f"{server.url}/metrics", timeout=30).text
    assert metric(scraped, "rerankd_shared_prefix_tokens_total", 'model="qwen3"') == (
        full.tokens - shared.tokens
    )
    expected = whole.score([(QUERY, d) for d in DOCUMENTS], instruction=INSTRUCTION)
    results = sorted(response.json()["results"], key=lambda r: r["index"])
    assert np.abs(np.array([r["relevance_score"] for r in results]) - expected).max() < 1e-5
