"""The bi-encoder embedding cache with the built-in text model, and image input refused by a
text-only model, on real servers (one with Redis shared by two servers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.imaging import b64, data_url, png
from tests.server import ServerProcess, run_server
from tests.test_redis import RedisServer
from tests.test_serving import metric

PASSAGES = [
    "Paris is the capital and largest city of France.",
    "Bananas are yellow and grow in tropical climates.",
    "The Eiffel Tower was built for the 1889 World's Fair.",
    "Mount Everest is the highest mountain above sea level.",
]


@pytest.fixture(scope="module")
def builtin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with run_server(["--model", "builtin"], log_dir=tmp_path_factory.mktemp("mm-cache")) as server:
        yield server


def _tokens(client: httpx.Client, query: str) -> int:
    """Tokens of one text alone, measured by the server: a request whose document is cached."""
    return client.post("/rerank", json={"query": query, "documents": [PASSAGES[0]]}).json()[
        "usage"
    ]["tokens"]


def test_a_document_embedded_once_serves_later_queries(builtin: ServerProcess) -> None:
    with builtin.client() as client:
        first = client.post(
            "/rerank", json={"query": "capital of France", "documents": PASSAGES[:3]}
        ).json()
        embedded = metric(client.get("/metrics").text, "rerankd_embedded_total")
        second = client.post(
            "/rerank", json={"query": "tallest mountain", "documents": PASSAGES[1:]}
        ).json()
        embedded_after = metric(client.get("/metrics").text, "rerankd_embedded_total")
        fresh_query_tokens = _tokens(client, "tallest mountain in the world")
    assert first["usage"]["cached"] == 0
    assert second["usage"]["cached"] == 2  # passages 1 and 2 were embedded by the first request
    assert embedded_after - embedded == 2  # only the new query and passage 3 ran
    assert second["results"][0]["index"] == 2  # Everest, among PASSAGES[1:]
    assert 0 < fresh_query_tokens < second["usage"]["tokens"]


def test_cached_embeddings_give_the_scores_of_a_cold_server(
    builtin: ServerProcess, tmp_path: Path
) -> None:
    body = {"query": "a fair in 1889", "documents": PASSAGES, "raw_scores": True}
    with builtin.client() as client:
        client.post("/rerank", json={"query": "warm up", "documents": PASSAGES})
        warm = client.post("/rerank", json=body).json()
    assert warm["usage"]["cached"] == len(PASSAGES)
    with run_server(["--model", "builtin", "--embedding-cache-mb", "0"], log_dir=tmp_path) as cold:
        uncached = httpx.post(cold.url + "/rerank", json=body, timeout=60).json()
        again = httpx.post(cold.url + "/rerank", json=body, timeout=60).json()
    assert uncached["usage"]["cached"] == again["usage"]["cached"] == 0
    assert [r["index"] for r in warm["results"]] == [r["index"] for r in uncached["results"]]
    for hot, cold_result in zip(warm["results"], uncached["results"], strict=True):
        assert hot["score"] == pytest.approx(cold_result["score"], abs=1e-6)


def test_two_servers_share_embeddings_through_redis(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    try:
        args = ["--model", "builtin", "--redis-url", redis_server.url]
        body = {"query": "yellow fruit", "documents": PASSAGES}
        with (
            run_server(args, log_dir=tmp_path) as first,
            run_server(args, log_dir=tmp_path) as second,
        ):
            scored = httpx.post(first.url + "/rerank", json=body, timeout=60).json()
            shared = httpx.post(
                second.url + "/rerank", json={**body, "query": "a yellow fruit"}, timeout=60
            ).json()
            text = httpx.get(second.url + "/metrics").text
        assert scored["usage"]["cached"] == 0 and shared["usage"]["cached"] == len(PASSAGES)
        assert redis_server.keys() == 2 + len(PASSAGES)  # both queries' and each passage's
        hits = metric(text, "rerankd_cache_hits_total", 'backend="redis",kind="embedding"')
        assert hits == len(PASSAGES)
        assert shared["results"][0]["index"] == scored["results"][0]["index"] == 1
    finally:
        redis_server.kill()


@pytest.mark.parametrize(
    ("route", "body", "where"),
    [
        ("/rerank", {"query": "q", "documents": ["text", {"image": b64(png(1))}]}, "documents[1]"),
        ("/v1/rerank", {"query": "q", "documents": [{"image": data_url(png(1))}]}, "documents[0]"),
        (
            "/v2/rerank",
            {
                "query": "q",
                "documents": {
                    "content": [{"type": "image_url", "image_url": {"url": data_url(png(1))}}]
                },
            },
            "documents[0]",
        ),
        ("/rerank", {"query": {"image": b64(png(2))}, "documents": ["text"]}, "image query"),
    ],
)
def test_a_text_only_model_refuses_images_naming_itself(
    builtin: ServerProcess, route: str, body: dict, where: str
) -> None:
    with builtin.client() as client:
        response = client.post(route, json=body)
        assert response.status_code == 400, response.text
        message = response.json()["error"]["message"]
        assert where in message and "'builtin'" in message
        assert client.post("/rerank", json={"query": "q", "documents": ["d"]}).status_code == 200


def test_text_in_every_shape_scores_the_same(builtin: ServerProcess) -> None:
    """Strings, Jina's {"text"} objects and vLLM's text content parts are the same documents."""
    parts = [{"type": "text", "text": p} for p in PASSAGES]
    with builtin.client() as client:
        native = client.post("/rerank", json={"query": "Eiffel", "documents": PASSAGES}).json()
        jina = client.post(
            "/v1/rerank",
            json={
                "query": "Eiffel",
                "documents": [{"text": p} for p in PASSAGES],
                "return_documents": True,
            },
        ).json()
        vllm = client.post(
            "/v2/rerank",
            json={
                "query": {"content": [{"type": "text", "text": "Eiffel"}]},
                "documents": {"content": parts},
            },
        ).json()
    expected = [(r["index"], pytest.approx(r["score"], abs=1e-9)) for r in native["results"]]
    assert [(r["index"], r["relevance_score"]) for r in jina["results"]] == expected
    assert [(r["index"], r["relevance_score"]) for r in vllm["results"]] == expected
    assert jina["results"][0]["document"] == {"text": PASSAGES[native["results"][0]["index"]]}
