"""The HTTP service through a real server process, speaking plain HTTP."""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import ServerProcess, metric, run_server
from tests.texts import mixed_pairs

DOCUMENTS = [d for _, d in mixed_pairs(12, seed=11, max_words=60)]
QUERY = "apple phone titanium"


@pytest.fixture(scope="module")
def server(bert_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = [
        "--model",
        f"{bert_model}=tiny-bert",
        "--model",
        "builtin",
        "--max-length",
        "128",
        "--max-documents",
        "200",
    ]
    with run_server(args, log_dir=tmp_path_factory.mktemp("api")) as running:
        yield running


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


def native_scores(
    client: httpx.Client, documents: list[str] = DOCUMENTS, **extra
) -> dict[int, float]:
    response = client.post("/rerank", json={"query": QUERY, "documents": documents, **extra})
    assert response.status_code == 200, response.text
    return {r["index"]: r["score"] for r in response.json()["results"]}


def test_tutorial_request_and_response(client: httpx.Client) -> None:
    body = {
        "query": "What is the capital of France?",
        "documents": [
            "Paris is the capital of France.",
            "Bananas are yellow.",
            "The Eiffel Tower is in Paris.",
        ],
    }
    response = client.post("/rerank", json=body)
    assert response.status_code == 200
    data = response.json()
    assert data["query"] == body["query"]
    scores = [r["score"] for r in data["results"]]
    assert scores == sorted(scores, reverse=True)
    assert {r["document"] for r in data["results"]} == set(body["documents"])
    assert all(0 <= s <= 1 for s in scores)
    assert (
        data["model"] == "tiny-bert" and data["usage"]["pairs"] == 3 and data["usage"]["tokens"] > 0
    )
    assert sorted(r["index"] for r in data["results"]) == [0, 1, 2]


def test_tutorial_curl_example_pasted_as_is(server: ServerProcess) -> None:
    command = (
        f'curl -s -X POST "{server.url}/rerank" -H "Content-Type: application/json" '
        """-d '{"query": "What is the capital of France?", "documents": ["Paris is the capital of France.", "Berlin is the capital of Germany.", "The Eiffel Tower is located in Paris."]}'"""
    )
    output = subprocess.run(command, shell=True, capture_output=True, text=True, check=True).stdout
    results = json.loads(output)["results"]
    assert len(results) == 3 and all({"document", "score"} <= set(r) for r in results)
    # curl's -d without a content type (form-urlencoded) works too
    output = subprocess.run(
        [
            "curl",
            "-s",
            "-X",
            "POST",
            f"{server.url}/rerank",
            "-d",
            '{"query": "q", "documents": ["d"]}',
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert len(json.loads(output)["results"]) == 1


def test_every_dialect_gives_the_same_scores(client: httpx.Client) -> None:
    expected = native_scores(client)
    tei = client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "truncate": True}).json()
    assert {r["index"]: r["score"] for r in tei} == pytest.approx(expected, abs=1e-6)
    assert all("text" not in r for r in tei)
    for path in ("/v1/rerank", "/v2/rerank"):
        body = {
            "model": "tiny-bert",
            "query": QUERY,
            "documents": [{"text": d} for d in DOCUMENTS],
            "return_documents": True,
        }
        data = client.post(path, json=body).json()
        assert {r["index"]: r["relevance_score"] for r in data["results"]} == pytest.approx(
            expected, abs=1e-6
        )
        assert data["results"][0]["document"]["text"] == DOCUMENTS[data["results"][0]["index"]]
        assert data["id"] and data["model"] == "tiny-bert" and "billed_units" in data["meta"]
    batch = client.post(
        "/batch_rerank",
        json={
            "queries": [
                {"query": QUERY, "documents": DOCUMENTS},
                {"query": "other", "documents": DOCUMENTS[:3], "top_n": 2},
            ]
        },
    ).json()
    assert {r["index"]: r["score"] for r in batch["results"][0]["results"]} == pytest.approx(
        expected, abs=1e-6
    )
    assert len(batch["results"][1]["results"]) == 2 and batch["results"][1]["query"] == "other"


def test_tei_options(client: httpx.Client) -> None:
    raw = client.post(
        "/rerank",
        json={"query": QUERY, "texts": DOCUMENTS[:3], "raw_scores": True, "return_text": True},
    ).json()
    assert len(raw) == 3 and all(r["text"] == DOCUMENTS[r["index"]] for r in raw)
    normalized = client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS[:3]}).json()
    expected = {r["index"]: r["score"] for r in normalized}
    # raw_scores gives the logit: its sigmoid is the normal score (no test on the logit's range).
    assert {r["index"]: 1 / (1 + math.exp(-r["score"])) for r in raw} == pytest.approx(
        expected, abs=1e-9
    )
    long_text = "word " * 1000
    refused = client.post("/rerank", json={"query": QUERY, "texts": [long_text], "truncate": False})
    assert refused.status_code == 400 and set(refused.json()) == {"error", "error_type"}
    left = client.post(
        "/rerank",
        json={
            "query": QUERY,
            "texts": [long_text + " end"],
            "truncate": True,
            "truncation_direction": "Left",
        },
    )
    assert left.status_code == 200


def test_a_cached_truncated_score_never_answers_a_request_that_refuses_truncation(
    client: httpx.Client,
) -> None:
    long_text = "cached " * 1000
    truncated = client.post(
        "/rerank", json={"query": QUERY, "texts": [long_text], "truncate": True}
    )
    assert truncated.status_code == 200  # scored truncated, and now in the score cache
    refused = client.post("/rerank", json={"query": QUERY, "texts": [long_text], "truncate": False})
    assert refused.status_code == 400, refused.text


def test_top_n_return_documents_and_raw_scores(client: httpx.Client) -> None:
    top = client.post(
        "/rerank",
        json={"query": QUERY, "documents": DOCUMENTS, "top_n": 3, "return_documents": False},
    ).json()["results"]
    assert len(top) == 3 and all("document" not in r for r in top)
    raw = client.post(
        "/rerank", json={"query": QUERY, "documents": DOCUMENTS, "raw_scores": True}
    ).json()["results"]
    scores = native_scores(client)
    assert all(abs(1 / (1 + math.exp(-r["score"])) - scores[r["index"]]) < 1e-9 for r in raw)
    cohere = client.post(
        "/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS[:2], "top_n": 10}
    ).json()
    assert len(cohere["results"]) == 2  # Cohere semantics: top_n above the count means all


def test_several_models_chosen_by_name(client: httpx.Client) -> None:
    by_builtin = client.post(
        "/rerank", json={"query": QUERY, "documents": DOCUMENTS, "model": "builtin"}
    ).json()
    assert by_builtin["model"] == "builtin"
    assert {r["index"]: r["score"] for r in by_builtin["results"]} != pytest.approx(
        native_scores(client)
    )
    unknown = client.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS, "model": "nope"})
    assert unknown.status_code == 404
    assert (
        "'tiny-bert'" in unknown.json()["error"]["message"]
        and "'builtin'" in unknown.json()["error"]["message"]
    )
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["tiny-bert", "builtin"]
    assert client.get("/v1/models/builtin").json()["id"] == "builtin"


def test_identical_documents_are_scored_once(client: httpx.Client) -> None:
    documents = ["a unique repeated passage 1", "a unique repeated passage 1", "another one 2"]
    before = client.get("/metrics").text
    data = client.post("/rerank", json={"query": "dedupe check", "documents": documents}).json()
    after = client.get("/metrics").text
    scores = {r["index"]: r["score"] for r in data["results"]}
    assert scores[0] == scores[1]
    assert data["usage"]["pairs"] == 3 and data["usage"]["cached"] == 0
    # What the model ran: two pairs, not three, and exactly the tokens the response reports.
    ran = metric(after, "rerankd_pairs_scored_total", 'model="tiny-bert"')
    assert ran - metric(before, "rerankd_pairs_scored_total", 'model="tiny-bert"') == 2
    tokens = metric(after, "rerankd_tokens_scored_total", 'model="tiny-bert"')
    run_tokens = tokens - metric(before, "rerankd_tokens_scored_total", 'model="tiny-bert"')
    assert run_tokens == data["usage"]["tokens"]
    single = client.post(
        "/rerank", json={"query": "dedupe check", "documents": ["a unique repeated passage 1"]}
    ).json()
    assert single["usage"]["cached"] == 1  # the repeated passage's score is cached once


def test_ops_routes(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok", "model_loaded": True}
    info = client.get("/info").json()
    assert info["ready"] and info["max_client_batch_size"] == 200 and len(info["models"]) == 2
    assert info["models"][0]["revision"].startswith("sha256:")
    metrics = client.get("/metrics").text
    for name in (
        "rerankd_requests_total",
        "rerankd_request_duration_seconds_bucket",
        "rerankd_pairs_scored_total",
        "rerankd_model_load_seconds",
        "rerankd_requests_in_flight",
    ):
        assert name in metrics
    assert client.get("/docs").status_code == 200
    assert "/v1/rerank" in client.get("/openapi.json").json()["paths"]


def test_request_id_is_echoed_and_logged_without_document_text(
    client: httpx.Client, server: ServerProcess
) -> None:
    secret = "a very private passage about zebras"
    response = client.post(
        "/rerank",
        json={"query": QUERY, "documents": [secret]},
        headers={"X-Request-ID": "req-12345"},
    )
    assert response.headers["x-request-id"] == "req-12345"
    assert client.get("/health").headers["x-request-id"]
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    entry = next(line for line in lines if line.get("request_id") == "req-12345")
    assert entry["route"] == "/rerank" and entry["status"] == 200 and entry["documents"] == 1
    assert entry["model"] == "tiny-bert"
    assert "latency_ms" in entry and entry["tokens"] > 0
    assert "zebras" not in server.logs()


BAD_INPUTS = [
    ("invalid JSON", b'{"query": "q", "documents": [', {}, 400, "not valid JSON"),
    (
        "wrong content type",
        b'{"query": "q", "documents": ["d"]}',
        {"content-type": "application/xml"},
        415,
        "content-type",
    ),
    ("missing field", b'{"query": "q"}', {}, 422, "documents"),
    ("null query", b'{"query": null, "documents": ["d"]}', {}, 422, "query"),
    ("number as document", b'{"query": "q", "documents": [1, 2]}', {}, 422, "documents[0]"),
    ("number as query", b'{"query": 5, "documents": ["d"]}', {}, 422, "query"),
    ("empty query", b'{"query": "", "documents": ["d"]}', {}, 400, "query is empty"),
    ("empty list", b'{"query": "q", "documents": []}', {}, 400, "documents is empty"),
    ("whitespace document", b'{"query": "q", "documents": ["ok", "   "]}', {}, 400, "documents[1]"),
    ("top_n zero", b'{"query": "q", "documents": ["d"], "top_n": 0}', {}, 400, "top_n"),
    ("top_n negative", b'{"query": "q", "documents": ["d"], "top_n": -1}', {}, 400, "top_n"),
    ("top_n above count", b'{"query": "q", "documents": ["d"], "top_n": 2}', {}, 400, "top_n"),
    ("invalid UTF-8", b'{"query": "q\xff\xfe", "documents": ["d"]}', {}, 400, "UTF-8"),
    ("array body", b'["q", "d"]', {}, 422, "JSON object"),
    ("empty body", b"", {}, 400, "empty"),
    ("unknown model", b'{"query": "q", "documents": ["d"], "model": "x"}', {}, 404, "not served"),
]


@pytest.mark.parametrize(
    ("name", "body", "headers", "status", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_input_gets_a_clear_4xx(
    client: httpx.Client, name: str, body: bytes, headers: dict, status: int, message: str
) -> None:
    response = client.post(
        "/rerank", content=body, headers={"content-type": "application/json", **headers}
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"] and error["code"] == status and error["type"]
    assert client.post("/rerank", json={"query": "q", "documents": ["d"]}).status_code == 200


JARGON = ("Input should", "union[", "MultiModal", "ImageInput", "[type=", "list[", "dict[")
# The same mistake on every dialect: one formatter, the field, what it expects, what came.
MISTAKES = [
    ("/rerank", {"query": "q", "documents": "one string"}, "documents: expected a list"),
    ("/v1/rerank", {"query": "q", "documents": "one string"}, "documents: expected a list or"),
    ("/v2/rerank", {"query": "q", "documents": "one string"}, "documents: expected a list or"),
    ("/rerank", {"query": "q", "texts": "one string"}, "texts: expected a list"),
    ("/v1/reranking", {"query": "q", "input": "one string"}, "input: expected a list"),
    ("/batch_rerank", {"queries": "one string"}, "queries: expected a list"),
    ("/v1/rerank", {"query": "q", "documents": ["a", 3]}, "documents[1]: expected a string or"),
    ("/rerank", {"query": 5, "documents": ["a"]}, "query: expected a string or an object"),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": -1}, "top_n: expected a number"),
    ("/v2/rerank", {"documents": ["a"]}, "query: required, but missing"),
]


@pytest.mark.parametrize(("path", "body", "said"), MISTAKES)
def test_validation_errors_speak_plainly_on_every_dialect(
    client: httpx.Client, path: str, body: dict, said: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    message = response.text
    assert said in message, message
    assert ", got " in message or "missing" in message, message
    assert not any(word in message for word in JARGON), message


def test_limits_give_413(client: httpx.Client) -> None:
    too_many = client.post("/rerank", json={"query": "q", "documents": ["d"] * 10_000})
    assert too_many.status_code == 413 and "at most 200" in too_many.json()["error"]["message"]
    huge_document = client.post("/rerank", json={"query": "q", "documents": ["x" * 1_000_000]})
    assert (
        huge_document.status_code == 413
        and "documents[0]" in huge_document.json()["error"]["message"]
    )
    fifty_mb = b'{"query": "q", "documents": ["' + b"y" * (50 * 1024 * 1024) + b'"]}'
    big_body = client.post(
        "/rerank", content=fifty_mb, headers={"content-type": "application/json"}
    )
    assert big_body.status_code == 413

    def chunks() -> Iterator[bytes]:
        yield b'{"query": "q", "documents": ["'
        for _ in range(20):
            yield b"z" * (1024 * 1024)
        yield b'"]}'

    chunked = client.post("/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert client.post("/rerank", json={"query": "q", "documents": ["d"]}).status_code == 200


def test_cohere_dialect_bad_input(client: httpx.Client) -> None:
    response = client.post("/v2/rerank", json={"query": "q", "documents": [{"title": "no text"}]})
    assert response.status_code == 422 and "text" in response.json()["error"]["message"]
    response = client.post("/v1/rerank", json={"query": "q", "documents": ["d"], "top_n": -1})
    assert response.status_code == 422 and "top_n" in response.json()["error"]["message"]
