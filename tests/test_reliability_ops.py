"""Operator hygiene on a real server: arbitrary Unicode never gets a 5xx, probes stay out of
the info log, no terminal colours in JSON logs, process and state metrics are there."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server import ServerProcess, metric, run_server

# Every code point, lone surrogates included (JSON can carry them as "\ud800" escapes).
ANY_TEXT = st.text(st.characters(exclude_categories=()), min_size=0, max_size=300)
LONG_TEXT = st.text(st.characters(exclude_categories=()), min_size=200, max_size=3000)


@pytest.fixture(scope="module")
def server(bert_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--model", f"{bert_model}=tiny-bert", "--max-length", "64"]
    args += ["--max-chunks-per-doc", "4"]
    with run_server(args, log_dir=tmp_path_factory.mktemp("ops")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


def post(client: httpx.Client, path: str, body: dict) -> httpx.Response:
    # ensure_ascii: lone surrogates travel as JSON escapes, as any client could send them.
    return client.post(
        path, content=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    query=ANY_TEXT,
    documents=st.lists(st.one_of(ANY_TEXT, LONG_TEXT), min_size=0, max_size=4),
    repeat=st.booleans(),
)
def test_any_unicode_through_every_text_path_is_never_a_5xx(
    client: httpx.Client, query: str, documents: list[str], repeat: bool
) -> None:
    if repeat and documents:
        documents = [*documents, documents[0]]  # dedup and the cache see it too
    bodies = [
        ("/rerank", {"query": query, "documents": documents}),
        (
            "/rerank",
            {
                "query": query,
                "documents": documents,
                "long_document_strategy": "chunk",
                "max_tokens_per_doc": 16,
            },
        ),
        ("/rerank", {"query": query, "texts": documents, "truncate": True}),
        ("/v1/rerank", {"query": query, "documents": [{"text": d} for d in documents]}),
        ("/batch_rerank", {"queries": [{"query": query, "documents": documents}]}),
    ]
    for path, body in bodies:
        response = post(client, path, body)
        assert response.status_code < 500, (path, response.text)
        assert response.json() is not None
        if response.status_code != 200:
            text = response.text
            assert "Traceback" not in text


def test_a_lone_surrogate_is_a_clear_400(client: httpx.Client) -> None:
    response = post(client, "/rerank", {"query": "q", "documents": ["fine", "bad \ud800 text"]})
    assert response.status_code == 400
    assert "documents[1]" in response.json()["error"]["message"]
    assert "surrogate" in response.json()["error"]["message"]


def test_logs_are_clean_json_without_probes_at_info(
    client: httpx.Client, server: ServerProcess
) -> None:
    for _ in range(3):
        assert client.get("/health").status_code == 200
        assert client.get("/metrics").status_code == 200
    assert post(client, "/rerank", {"query": "q", "documents": ["d"]}).status_code == 200
    text = server.logs()
    assert "\x1b[" not in text and "\\u001b" not in text, "no terminal colours in JSON logs"
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines and all("color_message" not in line for line in lines)
    access = [line for line in lines if line["logger"] == "rerankd.access"]
    assert any(line["route"] == "/rerank" for line in access)
    assert not any(line["route"] in ("/health", "/metrics") for line in access)


def test_process_state_and_queue_wait_metrics(client: httpx.Client) -> None:
    assert (
        post(client, "/rerank", {"query": "q", "documents": ["queue", "wait"]}).status_code == 200
    )
    text = client.get("/metrics").text
    assert metric(text, "process_resident_memory_bytes") > 10_000_000
    assert metric(text, "process_open_fds") > 0
    assert metric(text, "process_cpu_seconds_total") > 0
    assert metric(text, "rerankd_ready") == 1 and metric(text, "rerankd_draining") == 0
    assert metric(text, "rerankd_queue_wait_seconds_count", 'model="tiny-bert"') >= 1
    assert metric(text, "rerankd_batch_inference_seconds_count", 'model="tiny-bert"') >= 1
