"""`rerankd.Client` and `AsyncClient` against a real server: results, errors, keys, retries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest

import rerankd
from rerankd.client import APIError, Health, ModelInfo, RerankResponse
from rerankd.errors import (
    InvalidInput,
    ModelNotFound,
    NotReady,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
)
from tests.server import ServerProcess, run_server
from tests.test_clients import DOCUMENTS, MODEL, QUERY, assert_same_ranking, native_ranking

API_KEY = "client-secret"


@pytest.fixture
def server(shared_bert_server: ServerProcess) -> ServerProcess:
    """The tiny BERT as MODEL, at most 20 documents a request (shared with other files)."""
    return shared_bert_server


@pytest.fixture(scope="module")
def guarded_server(
    bert_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """API key required, and one request per 2 seconds per key."""
    args = ["--model", f"{bert_model}={MODEL}", "--api-keys", API_KEY, "--rate-limit", "1/2second"]
    with run_server(args, log_dir=tmp_path_factory.mktemp("client-guarded")) as running:
        yield running


def test_public_api_exports_the_clients() -> None:
    assert rerankd.Client is rerankd.client.Client
    assert {"Client", "AsyncClient"} <= set(rerankd.__all__)


def test_rerank_matches_the_native_route(server: ServerProcess) -> None:
    expected = native_ranking(server)
    with rerankd.Client(server.url, timeout=60) as client:
        response = client.rerank(QUERY, DOCUMENTS, model=MODEL)
    assert isinstance(response, RerankResponse)
    assert response.model == MODEL and response.query == QUERY
    assert_same_ranking([(r.index, r.score) for r in response.results], expected)
    assert [r.document for r in response.results] == [DOCUMENTS[r.index] for r in response.results]
    assert response.usage.documents == len(DOCUMENTS)


def test_rerank_options(server: ServerProcess) -> None:
    expected = native_ranking(server)
    with rerankd.Client(server.url) as client:
        top = client.rerank(QUERY, DOCUMENTS, top_n=2)
        raw = client.rerank(QUERY, DOCUMENTS, raw_scores=True, long_document_strategy="chunk")
    assert_same_ranking([(r.index, r.score) for r in top.results], expected[:2])
    assert [r.index for r in raw.results] == [i for i, _ in expected]
    assert any(r.score < 0 or r.score > 1 for r in raw.results), "raw logits, not sigmoid"


def test_batch_rerank(server: ServerProcess) -> None:
    expected = native_ranking(server)
    short = DOCUMENTS[:3]
    with rerankd.Client(server.url) as client:
        first, second = client.batch_rerank(
            [(QUERY, DOCUMENTS), {"query": QUERY, "documents": short, "top_n": 1}], model=MODEL
        )
    assert_same_ranking([(r.index, r.score) for r in first.results], expected)
    assert len(second.results) == 1
    assert second.results[0].document == short[second.results[0].index]


def test_models_and_health(server: ServerProcess) -> None:
    with rerankd.Client(server.url) as client:
        models = client.models()
        health = client.health()
    assert [m.id for m in models] == [MODEL]
    assert isinstance(models[0], ModelInfo) and models[0].max_length
    assert health == Health("ok", True) and health.ok


def test_errors_are_typed_and_carry_the_servers_message(server: ServerProcess) -> None:
    with rerankd.Client(server.url) as client:
        with pytest.raises(InvalidInput, match="query is empty") as empty:
            client.rerank("  ", DOCUMENTS)
        assert empty.value.status == 400
        with pytest.raises(ModelNotFound, match="served models: 'tiny-bert'") as unknown:
            client.rerank(QUERY, DOCUMENTS, model="no-such-model")
        assert unknown.value.status == 404
        with pytest.raises(PayloadTooLarge, match="at most 20") as too_many:
            client.rerank(QUERY, ["a document"] * 21)
        assert too_many.value.status == 413
        with pytest.raises(InvalidInput, match="top_n") as bad_top_n:
            client.rerank(QUERY, DOCUMENTS, top_n=50)
        assert bad_top_n.value.status == 400


def test_api_key_and_retry_after_on_429(guarded_server: ServerProcess) -> None:
    """The second call inside the window gets a 429; the client waits Retry-After, then succeeds."""
    with pytest.raises(Unauthorized, match="credentials|key|token"):
        rerankd.Client(guarded_server.url, api_key="wrong").rerank(QUERY, DOCUMENTS)

    seen: list[tuple[int, float, str | None]] = []

    def record(response: httpx.Response) -> None:
        seen.append((response.status_code, time.monotonic(), response.headers.get("retry-after")))

    with rerankd.Client(guarded_server.url, api_key=API_KEY, max_retries=3) as client:
        client._http.event_hooks["response"].append(record)
        first = client.rerank(QUERY, DOCUMENTS, model=MODEL)
        second = client.rerank(QUERY, DOCUMENTS, model=MODEL)
    assert [r.index for r in first.results] == [r.index for r in second.results]
    statuses = [status for status, _, _ in seen]
    assert statuses[0] == 200 and statuses[1] == 429 and statuses[-1] == 200, seen
    waited = seen[2][1] - seen[1][1]
    assert seen[1][2] is not None and waited >= float(seen[1][2]) - 0.05, seen

    time.sleep(2.1)
    with rerankd.Client(guarded_server.url, api_key=API_KEY, max_retries=0) as client:
        client.rerank(QUERY, DOCUMENTS)
        with pytest.raises(RateLimited, match="rate limit") as limited:
            client.rerank(QUERY, DOCUMENTS)
    assert limited.value.status == 429 and limited.value.retry_after is not None


async def test_async_client(server: ServerProcess) -> None:
    expected = native_ranking(server)
    async with rerankd.AsyncClient(server.url, timeout=60) as client:
        response = await client.rerank(QUERY, DOCUMENTS, model=MODEL)
        (batched,) = await client.batch_rerank([(QUERY, DOCUMENTS)])
        assert (await client.health()).ok
        assert [m.id for m in await client.models()] == [MODEL]
        with pytest.raises(ModelNotFound):
            await client.rerank(QUERY, DOCUMENTS, model="nope")
    assert_same_ranking([(r.index, r.score) for r in response.results], expected)
    assert_same_ranking([(r.index, r.score) for r in batched.results], expected)


# The retry rules on answers a healthy test server does not give on demand (503 with an HTTP
# date, a Retry-After too long to wait, a non-JSON error), with httpx's own mock transport.


def _replay(*responses: httpx.Response) -> tuple[httpx.MockTransport, list[float]]:
    queue = list(responses)
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        return queue.pop(0)

    return httpx.MockTransport(handler), times


OK_BODY = {
    "query": "q",
    "model": "m",
    "results": [{"index": 1, "score": 0.9}, {"index": 0, "score": 0.1}],
    "usage": {"documents": 2, "tokens": 7, "cached": 0},
}


def test_503_retried_after_an_http_date() -> None:
    later = formatdate(time.time() + 2, usegmt=True)
    busy = httpx.Response(
        503, headers={"Retry-After": later}, json={"error": {"type": "not_ready"}}
    )
    transport, times = _replay(busy, httpx.Response(200, json=OK_BODY))
    with rerankd.Client("http://rerankd.test", transport=transport) as client:
        response = client.rerank("q", ["a", "b"])
    assert [r.document for r in response.results] == ["b", "a"]
    assert response.usage.tokens == 7
    assert times[1] - times[0] >= 0.5  # an HTTP date has a one-second resolution


def test_retries_stop_at_max_retries_and_at_max_retry_wait() -> None:
    busy = [httpx.Response(503, headers={"Retry-After": "0"}, json={}) for _ in range(3)]
    transport, times = _replay(*busy)
    with (
        rerankd.Client("http://rerankd.test", transport=transport, max_retries=2) as client,
        pytest.raises(NotReady),
    ):
        client.rerank("q", ["a"])
    assert len(times) == 3

    transport, times = _replay(httpx.Response(429, headers={"Retry-After": "3600"}, json={}))
    with (
        rerankd.Client("http://rerankd.test", transport=transport) as client,
        pytest.raises(RateLimited) as limited,
    ):
        client.rerank("q", ["a"])
    assert len(times) == 1 and limited.value.retry_after == 3600


def test_unmapped_errors() -> None:
    transport, _ = _replay(
        httpx.Response(502, text="bad gateway from a proxy"),
        httpx.Response(400, json={"error": "Validation failed", "error_type": "Validation"}),
    )
    with rerankd.Client("http://rerankd.test", transport=transport) as client:
        with pytest.raises(APIError, match="bad gateway from a proxy") as proxy:
            client.models()
        assert proxy.value.status == 502
        with pytest.raises(InvalidInput, match="Validation failed"):
            client.models()


def test_readme_client_example_runs(server: ServerProcess, capsys: pytest.CaptureFixture) -> None:
    """The README's `py` block (not a `python` block: it needs a server) runs as written."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (block,) = [
        b for b in re.findall(r"```py\n(.*?)```", readme, re.DOTALL) if "rerankd.Client(" in b
    ]
    exec(compile(block.replace("http://localhost:8000", server.url), "README.md", "exec"), {})
    index, score, document = capsys.readouterr().out.splitlines()[0].split(" ", 2)
    assert document == ["Paris is in France.", "Bananas are yellow."][int(index)]
    assert 0.0 <= float(score) <= 1.0
