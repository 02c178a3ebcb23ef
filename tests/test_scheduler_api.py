"""`priority` through the native and Cohere dialects, and the queue-wait histogram, on a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import ServerProcess, run_server
from tests.test_serving import metric
from tests.texts import mixed_pairs

DOCUMENTS = [d for _, d in mixed_pairs(8, seed=5, max_words=40)]


@pytest.fixture(scope="module")
def server(bert_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--model", f"{bert_model}=tiny-bert", "--max-length", "128", "--cache-entries", "0"]
    with run_server(args, log_dir=tmp_path_factory.mktemp("scheduler")) as running:
        yield running


def test_priority_is_accepted_and_leaves_scores_alone(server: ServerProcess) -> None:
    with server.client() as http:
        plain = http.post("/rerank", json={"query": "apple", "documents": DOCUMENTS})
        urgent = http.post(
            "/rerank", json={"query": "apple", "documents": DOCUMENTS, "priority": -5}
        )
        cohere = http.post(
            "/v1/rerank",
            json={"query": "apple", "documents": DOCUMENTS, "priority": 3, "top_n": 8},
        )
    assert plain.status_code == urgent.status_code == cohere.status_code == 200
    scores = {r["index"]: r["score"] for r in plain.json()["results"]}
    assert {r["index"]: r["score"] for r in urgent.json()["results"]} == scores
    by_cohere = {r["index"]: r["relevance_score"] for r in cohere.json()["results"]}
    assert by_cohere == pytest.approx(scores)


@pytest.mark.parametrize(
    ("path", "priority"),
    [("/rerank", "high"), ("/rerank", 2**40), ("/v2/rerank", 1.5), ("/v1/rerank", None)],
)
def test_a_bad_priority_is_a_422_naming_the_field(
    server: ServerProcess, path: str, priority: object
) -> None:
    with server.client() as http:
        body = {"query": "apple", "documents": DOCUMENTS, "priority": priority}
        response = http.post(path, json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert "priority" in (error if isinstance(error, str) else error["message"])


def test_queue_wait_is_observed_once_per_request(server: ServerProcess) -> None:
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            bodies = [{"query": f"query {i}", "documents": DOCUMENTS} for i in range(6)]
            return await asyncio.gather(*(http.post("/rerank", json=b) for b in bodies))

    with server.client() as http:
        before = metric(http.get("/metrics").text, "rerankd_queue_wait_seconds_count")
        responses = asyncio.run(burst())
        text = http.get("/metrics").text
    assert all(r.status_code == 200 for r in responses)
    assert metric(text, "rerankd_queue_wait_seconds_count", 'model="tiny-bert"') == before + 6
