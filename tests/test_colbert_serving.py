"""ColBERT through real servers: a seen document costs no encoding, in memory and via Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from rerankd.reranker import Reranker
from tests.server import ServerProcess, metric, run_server
from tests.test_redis import RedisServer

QUERY_LENGTH = 32  # the tiny model's query_length: a query always runs exactly this many tokens
DOCUMENTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Apples and pears are fruit that grow in orchards in the autumn.",
    "Kubernetes schedules pods across the nodes of a cluster.",
    "The Eiffel Tower is in Paris, the capital of France.",
    "The Eiffel Tower is in Paris, the capital of France.",  # a duplicate runs once
]
DISTINCT = 4


@pytest.fixture(scope="module")
def server(
    colbert_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    args = ["--model", f"{colbert_model}=colbert"]
    with run_server(args, log_dir=tmp_path_factory.mktemp("colbert")) as running:
        yield running


def rerank(server: ServerProcess, query: str, documents: list[str], **extra: object) -> dict:
    body = {"query": query, "documents": documents, "model": "colbert", **extra}
    response = httpx.post(server.url + "/rerank", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def encoded(server: ServerProcess, role: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return metric(text, "rerankd_late_interaction_encoded_total", f'role="{role}"')


def by_index(body: dict, field: str = "score") -> np.ndarray:
    ordered = sorted(body["results"], key=lambda r: r["index"])
    return np.array([r[field] for r in ordered])


def test_seen_documents_cost_only_the_query(server: ServerProcess, colbert_model: Path) -> None:
    documents = [f"{d} (first test)" for d in DOCUMENTS]
    before = encoded(server, "document")
    first = rerank(server, "where is the fox?", documents, raw_scores=True)
    assert first["usage"]["cached"] == 0
    assert encoded(server, "document") - before == DISTINCT
    second = rerank(server, "which city has the tower?", documents, raw_scores=True)
    assert second["usage"]["cached"] == DISTINCT
    assert second["usage"]["tokens"] == QUERY_LENGTH  # the new query, nothing else
    assert encoded(server, "document") - before == DISTINCT  # no document encoded again
    # Cached vectors score exactly as fresh ones: the in-process reranker agrees.
    reranker = Reranker(colbert_model)
    for body, query in ((first, "where is the fox?"), (second, "which city has the tower?")):
        want = reranker.score([(query, d) for d in documents], raw=True)
        np.testing.assert_allclose(by_index(body), want, atol=1e-5, rtol=0)
    repeat = rerank(server, "which city has the tower?", documents, raw_scores=True)
    assert repeat["usage"]["tokens"] == 0 and repeat["usage"]["cached"] == DISTINCT


def test_relevance_and_raw_scores(server: ServerProcess) -> None:
    raw = by_index(rerank(server, "fox", DOCUMENTS, raw_scores=True))
    relevance = by_index(rerank(server, "fox", DOCUMENTS), "relevance_score")
    np.testing.assert_allclose(relevance, (raw / QUERY_LENGTH + 1) / 2, atol=1e-9)
    assert ((relevance >= 0) & (relevance <= 1)).all()


def test_chunked_documents_are_cached_per_policy(server: ServerProcess) -> None:
    long = " ".join(DOCUMENTS[:4] * 20)
    cut = rerank(server, "fox", [long], raw_scores=True, max_tokens_per_doc=16)
    chunked = rerank(
        server,
        "fox",
        [long],
        raw_scores=True,
        max_tokens_per_doc=16,
        long_document_strategy="chunk",
    )
    assert chunked["usage"]["cached"] == 0  # another policy: other vectors
    assert chunked["usage"]["tokens"] > cut["usage"]["tokens"]
    assert by_index(chunked)[0] >= by_index(cut)[0] - 1e-9
    again = rerank(
        server,
        "tower",
        [long],
        raw_scores=True,
        max_tokens_per_doc=16,
        long_document_strategy="chunk",
    )
    assert again["usage"]["cached"] == 1 and again["usage"]["tokens"] == QUERY_LENGTH


def test_token_vectors_shared_through_redis(colbert_model: Path, tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    try:
        args = ["--model", f"{colbert_model}=colbert", "--redis-url", redis_server.url]
        with (
            run_server(args, log_dir=tmp_path) as first,
            run_server(args, log_dir=tmp_path) as second,
        ):
            scored = rerank(first, "where is the fox?", DOCUMENTS, raw_scores=True)
            assert scored["usage"]["cached"] == 0
            assert redis_server.keys() == DISTINCT + 1  # the documents and the query
            shared = rerank(second, "which city has the tower?", DOCUMENTS, raw_scores=True)
            assert shared["usage"]["cached"] == DISTINCT
            assert shared["usage"]["tokens"] == QUERY_LENGTH
            assert encoded(second, "document") == 0 and encoded(second, "query") == 1
            text = httpx.get(second.url + "/metrics", timeout=10).text
            hits = 'backend="redis",kind="token_vectors"'
            assert metric(text, "rerankd_cache_hits_total", hits) == DISTINCT
            # Redis holds float16 vectors: the second server's scores are the first's within
            # float16 rounding (each vector component to 2^-11 of its size).
            fresh = rerank(first, "which city has the tower?", DOCUMENTS, raw_scores=True)
            np.testing.assert_allclose(by_index(shared), by_index(fresh), atol=5e-3, rtol=0)
            assert [r["index"] for r in shared["results"]] == [r["index"] for r in fresh["results"]]
    finally:
        redis_server.kill()
