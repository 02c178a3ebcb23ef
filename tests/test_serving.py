"""Batching across requests, backpressure, long documents and the cache, on a real server."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import httpx
import pytest

from tests.server import ServerProcess, metric, run_server
from tests.texts import WORDS


def rag_request(seed: int, count: int = 32) -> dict:
    rng = random.Random(seed)
    documents = [" ".join(rng.choices(WORDS, k=rng.randint(20, 400))) for _ in range(count)]
    return {"query": " ".join(rng.choices(WORDS, k=6)), "documents": documents}


@pytest.fixture
def batching_server(shared_xlmr_server: ServerProcess) -> ServerProcess:
    """No cache, an 8192-token batch budget filled for up to 5 ms (shared with other files:
    these tests read metric deltas, never totals)."""
    return shared_xlmr_server


async def _concurrent(url: str, bodies: list[dict]) -> tuple[list[dict], float, float]:
    """Send every body at once; meanwhile time /health and /metrics.

    Returns the responses, the probes' worst latency and how long the whole load took.
    """
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        load_started = time.perf_counter()
        load = asyncio.gather(*(client.post("/rerank", json=b) for b in bodies))
        worst = 0.0
        while not load.done():
            for path in ("/health", "/metrics"):
                started = time.perf_counter()
                assert (await client.get(path)).status_code == 200
                worst = max(worst, time.perf_counter() - started)
            await asyncio.sleep(0.1)
        responses = await load
        load_seconds = time.perf_counter() - load_started
    assert all(r.status_code == 200 for r in responses), [
        r.text for r in responses if r.status_code != 200
    ]
    return [r.json() for r in responses], worst, load_seconds


def batch_metrics(server: ServerProcess) -> tuple[float, float, float, float]:
    """Batches so far, those of a single request, and their padded and real tokens."""
    text = httpx.get(server.url + "/metrics").text
    return (
        metric(text, "rerankd_batch_requests_count"),
        metric(text, "rerankd_batch_requests_bucket", 'le="1.0"'),
        metric(text, "rerankd_batch_padded_tokens_sum"),
        metric(text, "rerankd_batch_real_tokens_total"),
    )


def test_concurrent_requests_are_batched_together_without_changing_scores(
    batching_server: ServerProcess,
) -> None:
    bodies = [rag_request(seed) for seed in range(16)]
    before = batch_metrics(batching_server)
    together, worst_ops_latency, load_seconds = asyncio.run(
        _concurrent(batching_server.url, bodies)
    )
    print(f"slowest /health or /metrics under full load: {worst_ops_latency * 1000:.0f} ms")
    # Relative, not a stopwatch: were inference blocking the event loop, a probe sent during
    # the load would wait for most of it.
    assert worst_ops_latency < load_seconds / 2, "inference must not block the event loop"
    batches, single_request_batches, padded, real = (
        after - earlier
        for after, earlier in zip(batch_metrics(batching_server), before, strict=True)
    )
    assert batches > 0 and single_request_batches < batches, "some batches should mix requests"
    waste = padded / real
    print(f"padding waste on 16 x 32 mixed-length documents: {waste:.3f}")
    assert waste <= 1.15
    with httpx.Client(base_url=batching_server.url, timeout=120) as client:
        for body, result in zip(bodies, together, strict=True):
            alone = client.post("/rerank", json=body).json()
            expected = {r["index"]: r["score"] for r in alone["results"]}
            got = {r["index"]: r["score"] for r in result["results"]}
            assert got == pytest.approx(expected, abs=1e-5)


def test_a_client_that_disconnects_has_its_pairs_dropped(batching_server: ServerProcess) -> None:
    before = metric(httpx.get(batching_server.url + "/metrics").text, "rerankd_pairs_scored_total")
    body = {"query": "q", "documents": [f"doc {i} " + "word " * 300 for i in range(800)]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(batching_server.url + "/rerank", json=body, timeout=0.5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = httpx.get(batching_server.url + "/metrics").text
        if metric(text, "rerankd_queue_pairs") == 0:
            break
        time.sleep(0.1)
    time.sleep(0.5)
    text = httpx.get(batching_server.url + "/metrics").text
    assert metric(text, "rerankd_queue_pairs") == 0
    scored = metric(text, "rerankd_pairs_scored_total") - before
    assert scored < 800, f"{scored} of 800 pairs were scored for a client that had gone"


def test_overload_gives_quick_429s_and_recovers(xlmr_model: Path, tmp_path: Path) -> None:
    args = [
        "--model",
        str(xlmr_model),
        "--cache-entries",
        "0",
        "--max-queue-tokens",
        "20000",
        "--threads",
        "1",
    ]
    with run_server(args, log_dir=tmp_path) as server:

        async def flood() -> list[tuple[int, float, str | None]]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:

                async def one(seed: int) -> tuple[int, float, str | None]:
                    started = time.perf_counter()
                    response = await client.post("/rerank", json=rag_request(seed))
                    return (
                        response.status_code,
                        time.perf_counter() - started,
                        response.headers.get("retry-after"),
                    )

                return await asyncio.gather(*(one(seed) for seed in range(40)))

        outcomes = asyncio.run(flood())
        statuses = [status for status, _, _ in outcomes]
        assert set(statuses) <= {200, 429} and statuses.count(429) > 0 and statuses.count(200) > 0
        refused = [(seconds, retry) for status, seconds, retry in outcomes if status == 429]
        assert all(retry is not None and int(retry) >= 1 for _, retry in refused)
        served = [seconds for status, seconds, _ in outcomes if status == 200]
        # A refusal never waits for the queue: each comes back before the last accepted one.
        assert max(seconds for seconds, _ in refused) < max(served)
        text = httpx.get(server.url + "/metrics").text
        assert (
            metric(text, "rerankd_queue_pairs") == 0 and metric(text, "rerankd_queue_tokens") == 0
        )
        assert metric(
            text, "rerankd_rejected_requests_total", 'reason="overloaded"'
        ) == statuses.count(429)
        assert httpx.get(server.url + "/health").status_code == 200
        assert httpx.post(server.url + "/rerank", json=rag_request(99)).status_code == 200


@pytest.fixture
def builtin_server(shared_builtin_server: ServerProcess) -> ServerProcess:
    """The built-in model with up to 128 chunks a document (shared with other files: the cache
    test sends a body no other test sends)."""
    return shared_builtin_server


def test_long_document_chunking_finds_a_late_relevant_passage(
    builtin_server: ServerProcess,
) -> None:
    rng = random.Random(5)
    filler = ["The committee reviewed the quarterly budget figures for the regional office.",
              "Maintenance crews repainted the corridors of the administrative building.",
              "Several employees attended a workshop on spreadsheet formatting."]  # fmt: skip
    sentences = [rng.choice(filler) for _ in range(540)]
    sentences.insert(525, "The Eiffel Tower in Paris was completed in 1889 for the World's Fair.")
    document = " ".join(sentences)
    assert 4500 < len(document.split()) < 6000
    query = "When was the Eiffel Tower built?"
    with httpx.Client(base_url=builtin_server.url, timeout=120) as client:
        truncated = client.post("/rerank", json={"query": query, "documents": [document]}).json()
        # Windows of 128 tokens: a bi-encoder's mean pooling dilutes one sentence in 512.
        chunking = {
            "long_document_strategy": "chunk",
            "max_chunks_per_doc": 128,
            "max_tokens_per_doc": 128,
        }
        chunked = client.post(
            "/rerank", json={"query": query, "documents": [document], **chunking}
        ).json()
        cohere_body = {
            "query": query,
            "documents": [document],
            "max_chunks_per_doc": 128,
            "max_tokens_per_doc": 128,
        }
        cohere = client.post("/v1/rerank", json=cohere_body).json()
    low, high = truncated["results"][0]["score"], chunked["results"][0]["score"]
    print(f"5,000-word document: truncate {low:.3f}, chunk {high:.3f}")
    assert high > 0.7 and low < 0.55 and high - low > 0.2
    assert cohere["results"][0]["relevance_score"] == pytest.approx(high, abs=1e-6)
    assert chunked["usage"]["tokens"] > 10 * truncated["usage"]["tokens"]


def test_repeated_request_is_answered_from_the_cache(builtin_server: ServerProcess) -> None:
    body = {"query": "cache me", "documents": ["first passage here", "second passage there"]}
    with httpx.Client(base_url=builtin_server.url, timeout=60) as client:
        first = client.post("/rerank", json=body).json()
        hits_before = metric(client.get("/metrics").text, "rerankd_cache_hits_total")
        second = client.post("/rerank", json=body).json()
        hits_after = metric(client.get("/metrics").text, "rerankd_cache_hits_total")
        raw = client.post("/rerank", json={**body, "raw_scores": True}).json()
    assert (
        first["usage"]["cached"] == 0
        and second["usage"]["cached"] == 2
        and second["usage"]["tokens"] == 0
    )
    assert second["results"] == first["results"]
    assert hits_after - hits_before == 3  # a bi-encoder: the query's and both documents' embeddings
    assert raw["usage"]["cached"] == 2  # one cached raw score serves both forms


def test_a_request_past_its_timeout_gets_504(xlmr_model: Path, tmp_path: Path) -> None:
    args = [
        "--model",
        str(xlmr_model),
        "--threads",
        "1",
        "--request-timeout",
        "1",
        "--cache-entries",
        "0",
    ]
    with run_server(args, log_dir=tmp_path) as server:
        slow = {"query": "q", "documents": [f"doc {i} " + "word " * 400 for i in range(400)]}
        response = httpx.post(server.url + "/rerank", json=slow, timeout=60)
        assert response.status_code == 504 and response.json()["error"]["type"] == "timeout_error"
        assert response.headers["retry-after"]
        deadline = time.monotonic() + 1  # the timed-out pairs leave the queue within 1 s
        text = httpx.get(server.url + "/metrics").text
        while metric(text, "rerankd_queue_pairs") != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
            text = httpx.get(server.url + "/metrics").text
        assert metric(text, "rerankd_queue_pairs") == 0
        assert metric(text, "rerankd_rejected_requests_total", 'reason="timeout"') == 1
        assert (
            httpx.post(server.url + "/rerank", json=rag_request(3, count=4), timeout=60).status_code
            == 200
        )
