"""jina-reranker-v3 behind a real server: scores under load, the list cache, the dialects.

One server serves the tiny listwise model and a tiny cross-encoder. The scores it returns
equal the in-process `Reranker`'s for the same ordered list, alone and while 16 clients send
other lists and other clients use the cross-encoder; a document's score is cached per whole
(query, ordered list, instruction), never per pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from rerankd import Reranker
from rerankd.cli import app
from tests.server import ServerProcess, metric, run_server
from tests.texts import mixed_pairs

MODEL = "jina-v3"
QUERY = "which fruit grows in an orchard"
DOCUMENTS = [f"{i}: {d}" for i, (_, d) in enumerate(mixed_pairs(30, seed=8, max_words=40))]
INSTRUCTION = "Prefer passages that mention fruit"


@pytest.fixture(scope="module")
def server(
    jina_reranker_v3: Path, bert_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    args = ["--model", f"{jina_reranker_v3}={MODEL}", "--model", f"{bert_model}=tiny-bert"]
    args += ["--threads", "1", "--max-batch-tokens", "16384"]
    with run_server(args, log_dir=tmp_path_factory.mktemp("listwise")) as running:
        yield running


@pytest.fixture(scope="module")
def local(jina_reranker_v3: Path) -> Reranker:
    return Reranker(jina_reranker_v3, threads=1)


def raw_scores(
    server: ServerProcess, documents: list[str], instruction: str | None = None
) -> np.ndarray:
    body: dict[str, object] = {
        "model": MODEL,
        "query": QUERY,
        "documents": documents,
        "raw_scores": True,
    }
    if instruction:
        body["instruction"] = instruction
    with server.client() as http:
        response = http.post("/rerank", json=body)
    assert response.status_code == 200, response.text
    scores = np.empty(len(documents))
    for result in response.json()["results"]:
        scores[result["index"]] = result["score"]
    return scores


def rotation(k: int) -> list[str]:
    return DOCUMENTS[k:] + DOCUMENTS[:k]


def test_scores_alone_and_under_16_clients_with_other_traffic(
    server: ServerProcess, local: Reranker
) -> None:
    lists = [rotation(k) for k in range(16)]
    expected = [local.score([(QUERY, d) for d in docs], raw=True) for docs in lists]
    alone = [raw_scores(server, docs) for docs in lists[:2]]
    for got, want in zip(alone, expected, strict=False):
        assert np.abs(got - want).max() < 1e-5

    def other_traffic(i: int) -> int:
        with server.client() as http:
            body = {"model": "tiny-bert", "query": f"apple {i}", "documents": DOCUMENTS[:12]}
            return http.post("/rerank", json=body).status_code

    with server.client() as http:
        before = metric(
            http.get("/metrics").text, "rerankd_tokens_scored_total", f'model="{MODEL}"'
        )
    with ThreadPoolExecutor(24) as pool:
        others = [pool.submit(other_traffic, i) for i in range(24)]
        loaded = list(pool.map(lambda docs: raw_scores(server, docs), lists))
    assert all(f.result() == 200 for f in others)
    for got, want in zip(loaded, expected, strict=True):
        assert np.abs(got - want).max() < 1e-5
    assert np.array_equal(loaded[0], alone[0]) or np.abs(loaded[0] - alone[0]).max() < 1e-6
    with server.client() as http:
        after = metric(http.get("/metrics").text, "rerankd_tokens_scored_total", f'model="{MODEL}"')
    assert after > before  # the 14 new lists ran through the model


def test_the_cache_is_keyed_by_the_whole_ordered_list(
    server: ServerProcess, local: Reranker
) -> None:
    first = DOCUMENTS[:10]
    second = [DOCUMENTS[0], *DOCUMENTS[20:29]]  # the same first document, other neighbours
    a = raw_scores(server, first)
    b = raw_scores(server, second)
    assert abs(a[0] - b[0]) > 1e-6  # not the first list's cached score
    assert np.abs(b - local.score([(QUERY, d) for d in second], raw=True)).max() < 1e-5
    assert np.array_equal(raw_scores(server, first), a)  # a repeat is answered from the cache
    told = raw_scores(server, first, INSTRUCTION)
    assert np.abs(told - a).min() > 0  # the instruction is part of the key
    expected = local.score([(QUERY, d) for d in first], raw=True, instruction=INSTRUCTION)
    assert np.abs(told - expected).max() < 1e-5


def test_the_dialects_rank_the_same_way(server: ServerProcess) -> None:
    docs = DOCUMENTS[:8]
    with server.client() as http:
        native = http.post("/rerank", json={"model": MODEL, "query": QUERY, "documents": docs})
        cohere = http.post("/v1/rerank", json={"model": MODEL, "query": QUERY, "documents": docs})
        tei = http.post("/rerank", json={"model": MODEL, "query": QUERY, "texts": docs})
        mixedbread = http.post(
            "/v1/reranking", json={"model": MODEL, "query": QUERY, "input": docs}
        )
        vllm = http.post("/score", json={"model": MODEL, "text_1": QUERY, "text_2": docs})
    for response in (native, cohere, tei, mixedbread, vllm):
        assert response.status_code == 200, response.text
    order = [r["index"] for r in native.json()["results"]]
    assert [r["index"] for r in cohere.json()["results"]] == order
    assert [r["index"] for r in tei.json()] == order
    data = mixedbread.json()["data"]
    assert [r["index"] for r in data] == order
    vllm_scores = [r["score"] for r in vllm.json()["data"]]
    assert sorted(range(len(docs)), key=lambda i: -vllm_scores[i]) == order
    relevance = [r["relevance_score"] for r in cohere.json()["results"]]
    assert all(0.0 <= s <= 1.0 for s in relevance)


def test_rerankd_families_lists_it() -> None:
    result = CliRunner().invoke(app, ["families"])
    assert result.exit_code == 0
    assert "jina-reranker-v3:" in result.output and "listwise" in result.output


def test_the_batch_budget_asked_for_is_every_model_s(server: ServerProcess) -> None:
    """`--max-batch-tokens` overrides each backend's own default, for every model served."""
    for name in (MODEL, "tiny-bert"):
        model = httpx.get(f"{server.url}/v1/models/{name}", timeout=30).json()
        assert model["max_batch_tokens"] == 16384
    assert httpx.get(f"{server.url}/info", timeout=30).json()["max_batch_tokens"] == 16384
