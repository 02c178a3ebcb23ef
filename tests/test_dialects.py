"""The Voyage, vLLM and Mixedbread dialects against a real server, with the real SDKs where
there is one: same order and scores (1e-5) as the native route, their extras, their errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import ServerProcess, run_server
from tests.test_clients import DOCUMENTS, MODEL, QUERY, assert_same_ranking, native_ranking
from tests.texts import mixed_pairs

LONG = " ".join(d for _, d in mixed_pairs(40, seed=3, max_words=60))  # far over 128 tokens


@pytest.fixture(scope="module")
def server(bert_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--model", f"{bert_model}={MODEL}", "--max-length", "128", "--max-documents", "20"]
    with run_server(args, log_dir=tmp_path_factory.mktemp("dialects")) as running:
        yield running


@pytest.fixture()
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def error_message(response: httpx.Response) -> str:
    body = response.json()
    assert body["error"]["code"] == response.status_code
    assert body["detail"] == body["error"]["message"]  # Voyage, Xinference read `detail`
    return body["error"]["message"]


# --- Voyage ----------------------------------------------------------------------------------


def voyage(server: ServerProcess):
    import voyageai

    return voyageai.Client(api_key="not-needed", base_url=f"{server.url}/v1", timeout=60)


def test_voyage_sdk_rerank(server: ServerProcess) -> None:
    expected = native_ranking(server)
    response = voyage(server).rerank(QUERY, DOCUMENTS, model=MODEL)
    assert_same_ranking([(r.index, r.relevance_score) for r in response.results], expected)
    assert [r.document for r in response.results] == [DOCUMENTS[r.index] for r in response.results]
    assert response.total_tokens == 0  # every pair was just scored by native_ranking: cached
    fresh = voyage(server).rerank("a query nobody asked before", DOCUMENTS[:2], model=MODEL)
    assert fresh.total_tokens > 0


def test_voyage_sdk_top_k_and_truncation(server: ServerProcess) -> None:
    import voyageai

    expected = native_ranking(server)
    response = voyage(server).rerank(QUERY, DOCUMENTS, model=MODEL, top_k=2, truncation=True)
    assert_same_ranking([(r.index, r.relevance_score) for r in response.results], expected[:2])

    client = voyage(server)
    assert len(client.rerank(QUERY, [LONG, "short"], model=MODEL).results) == 2
    # Another long document: the cache would answer one already scored (with truncation).
    with pytest.raises(voyageai.error.InvalidRequestError, match="tokens"):
        client.rerank(QUERY, [LONG[::-1], "short"], model=MODEL, truncation=False)
    with pytest.raises(voyageai.error.APIError, match="not served here"):
        client.rerank(QUERY, DOCUMENTS, model="voyage-rerank-2")


def test_voyage_rest_shape(http: httpx.Client, server: ServerProcess) -> None:
    """Voyage's REST API as documented: `data[]` with the document as a string."""
    expected = native_ranking(server)
    body = {"query": QUERY, "documents": DOCUMENTS, "model": MODEL, "top_k": 3}
    answer = http.post("/v1/rerank", json={**body, "return_documents": True}).json()
    assert answer["object"] == "list" and answer["model"] == MODEL
    assert_same_ranking([(d["index"], d["relevance_score"]) for d in answer["data"]], expected[:3])
    assert [d["document"] for d in answer["data"]] == [
        DOCUMENTS[d["index"]] for d in answer["data"]
    ]
    assert isinstance(answer["usage"]["total_tokens"], int)
    assert "document" not in http.post("/v1/rerank", json=body).json()["data"][0]


@pytest.mark.parametrize(
    ("extra", "status", "fragment"),
    [
        ({"top_k": -1}, 422, "top_k"),
        ({"top_k": "3"}, 422, "top_k"),
        ({"top_k": 2, "top_n": 3}, 422, "disagree"),
        ({"truncation": "maybe"}, 422, "truncation"),
        ({"documents": []}, 400, "documents"),
        ({"model": "voyage-rerank-2"}, 404, "not served"),
        ({"documents": ["d"] * 21}, 413, "at most 20"),
    ],
)
def test_voyage_bad_input(http: httpx.Client, extra: dict, status: int, fragment: str) -> None:
    response = http.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS, **extra})
    assert response.status_code == status, response.text
    assert fragment in error_message(response)


def test_one_answer_serves_every_rerank_dialect(http: httpx.Client, server: ServerProcess) -> None:
    """Cohere's `results`, Xinference's `meta.tokens`, Voyage's `data`, vLLM's and Jina's
    `usage`, all in one answer; documents as Cohere's `{text}` and Voyage's string."""
    expected = native_ranking(server)
    answer = http.post(
        "/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS, "return_documents": True}
    ).json()
    assert_same_ranking([(r["index"], r["relevance_score"]) for r in answer["results"]], expected)
    assert [d["index"] for d in answer["data"]] == [r["index"] for r in answer["results"]]
    for cohere, voyage_item in zip(answer["results"], answer["data"], strict=True):
        assert cohere["document"] == {"text": voyage_item["document"]}
    assert answer["meta"]["tokens"]["input_tokens"] == answer["usage"]["total_tokens"]
    assert answer["usage"]["prompt_tokens"] == answer["usage"]["total_tokens"]
    assert answer["id"] and answer["object"] == "list"


# --- vLLM ------------------------------------------------------------------------------------


def test_vllm_rerank_extras(http: httpx.Client, server: ServerProcess) -> None:
    expected = native_ranking(server)
    body = {"query": QUERY, "documents": DOCUMENTS, "model": MODEL}

    everything = http.post("/v1/rerank", json={**body, "top_n": 0}).json()
    assert_same_ranking(
        [(r["index"], r["relevance_score"]) for r in everything["results"]], expected
    )

    raw = http.post("/v1/rerank", json={**body, "use_activation": False}).json()
    native_raw = http.post("/rerank", json={**body, "raw_scores": True}).json()
    assert_same_ranking(
        [(r["index"], r["relevance_score"]) for r in raw["results"]],
        [(r["index"], r["score"]) for r in native_raw["results"]],
    )

    capped = http.post("/v1/rerank", json={**body, "truncate_prompt_tokens": 4}).json()
    native_capped = http.post("/rerank", json={**body, "max_tokens_per_doc": 4}).json()
    assert_same_ranking(
        [(r["index"], r["relevance_score"]) for r in capped["results"]],
        [(r["index"], r["score"]) for r in native_capped["results"]],
    )
    unlimited = http.post("/v1/rerank", json={**body, "truncate_prompt_tokens": -1}).json()
    assert_same_ranking(
        [(r["index"], r["relevance_score"]) for r in unlimited["results"]], expected
    )

    left = http.post(
        "/v1/rerank", json={"query": QUERY, "documents": [LONG], "truncation_side": "left"}
    ).json()
    tei_left = http.post(
        "/rerank",
        json={"query": QUERY, "texts": [LONG], "truncate": True, "truncation_direction": "Left"},
    ).json()
    assert left["results"][0]["relevance_score"] == pytest.approx(tei_left[0]["score"], abs=1e-5)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
        ({"truncate_prompt_tokens": -2}, "truncate_prompt_tokens"),
        ({"truncation_side": "middle"}, "truncation_side"),
        ({"use_activation": "sometimes"}, "use_activation"),
    ],
)
def test_vllm_rerank_bad_extras(http: httpx.Client, extra: dict, fragment: str) -> None:
    response = http.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS, **extra})
    assert response.status_code == 422
    assert fragment in error_message(response)


def scores_by_pair(server: ServerProcess, pairs: list[tuple[str, str]]) -> list[float]:
    """Each pair's score from the native route, one call per query."""
    scores = []
    for query, document in pairs:
        ranking = dict(native_ranking_raw(server, query, [document]))
        scores.append(ranking[0])
    return scores


def native_ranking_raw(server: ServerProcess, query: str, documents: list[str]):
    response = httpx.post(
        f"{server.url}/rerank", json={"query": query, "documents": documents}, timeout=60
    )
    assert response.status_code == 200, response.text
    return [(r["index"], r["score"]) for r in response.json()["results"]]


@pytest.mark.parametrize("path", ["/score", "/v1/score"])
@pytest.mark.parametrize(
    ("first", "second"),
    [("text_1", "text_2"), ("queries", "documents"), ("queries", "items"), ("data_1", "data_2")],
)
def test_vllm_score_one_to_many(
    http: httpx.Client, server: ServerProcess, path: str, first: str, second: str
) -> None:
    expected = dict(native_ranking(server))
    answer = http.post(path, json={"model": MODEL, first: QUERY, second: DOCUMENTS}).json()
    assert answer["object"] == "list" and answer["model"] == MODEL and answer["id"]
    assert [d["index"] for d in answer["data"]] == list(range(len(DOCUMENTS)))  # request order
    assert all(d["object"] == "score" for d in answer["data"])
    for item in answer["data"]:
        assert item["score"] == pytest.approx(expected[item["index"]], abs=1e-5)
    assert answer["usage"]["total_tokens"] == answer["usage"]["prompt_tokens"]
    assert answer["usage"]["completion_tokens"] == 0

    as_list = http.post(path, json={first: [QUERY], second: DOCUMENTS}).json()
    assert [d["score"] for d in as_list["data"]] == pytest.approx(
        [d["score"] for d in answer["data"]], abs=1e-5
    )


def test_vllm_score_pairs_position_by_position(http: httpx.Client, server: ServerProcess) -> None:
    queries = [QUERY, "Where is the Eiffel Tower?", QUERY, "container orchestration"]
    documents = DOCUMENTS[:4]
    answer = http.post("/score", json={"text_1": queries, "text_2": documents}).json()
    expected = scores_by_pair(server, list(zip(queries, documents, strict=True)))
    assert [d["score"] for d in answer["data"]] == pytest.approx(expected, abs=1e-5)

    single = http.post("/score", json={"text_1": QUERY, "text_2": DOCUMENTS[2]}).json()
    assert len(single["data"]) == 1
    assert single["data"][0]["score"] == pytest.approx(
        scores_by_pair(server, [(QUERY, DOCUMENTS[2])])[0], abs=1e-5
    )

    raw = http.post("/score", json={"text_1": QUERY, "text_2": DOCUMENTS, "use_activation": False})
    native_raw = http.post(
        "/rerank", json={"query": QUERY, "documents": DOCUMENTS, "raw_scores": True}
    )
    by_index = {r["index"]: r["score"] for r in native_raw.json()["results"]}
    assert [d["score"] for d in raw.json()["data"]] == pytest.approx(
        [by_index[i] for i in range(len(DOCUMENTS))], abs=1e-5
    )


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"text_1": ["a", "b"], "text_2": ["x", "y", "z"]}, 400, "cannot pair"),
        ({"text_1": "a"}, 422, "text_2 is missing"),
        ({"queries": "a"}, 422, "documents is missing"),
        ({}, 422, "text_1 and text_2"),
        ({"text_1": [], "text_2": ["x"]}, 400, "text_1 is empty"),
        ({"text_1": "a", "text_2": []}, 400, "text_2 is empty"),
        ({"text_1": "a", "text_2": [""]}, 400, "empty"),
        ({"text_1": " ", "text_2": ["x"]}, 400, "query is empty"),
        ({"text_1": 1, "text_2": ["x"]}, 422, "text_1"),
        ({"text_1": "a", "text_2": ["x"], "model": "nope"}, 404, "not served"),
        ({"text_1": "a", "text_2": ["x"] * 21}, 413, "at most 20"),
        ({"text_1": "a", "text_2": ["x"], "truncate_prompt_tokens": 0}, 422, "truncate"),
    ],
)
def test_vllm_score_bad_input(http: httpx.Client, body: dict, status: int, fragment: str) -> None:
    response = http.post("/v1/score", json=body)
    assert response.status_code == status, response.text
    assert fragment in error_message(response)


# --- Mixedbread ------------------------------------------------------------------------------


def mixedbread(server: ServerProcess):
    from mixedbread import Mixedbread

    return Mixedbread(api_key="not-needed", base_url=server.url, max_retries=0, timeout=60)


def test_mixedbread_sdk_rerank(server: ServerProcess) -> None:
    expected = native_ranking(server)
    response = mixedbread(server).rerank(model=MODEL, query=QUERY, input=DOCUMENTS)
    assert_same_ranking([(d.index, d.score) for d in response.data], expected)
    assert response.object == "list" and response.model == MODEL
    assert response.top_k == len(DOCUMENTS) and response.return_input is False
    assert all(d.input is None and d.object == "rank_result" for d in response.data)
    assert response.usage.total_tokens == response.usage.prompt_tokens

    top = mixedbread(server).rerank(query=QUERY, input=DOCUMENTS, top_k=2, return_input=True)
    assert_same_ranking([(d.index, d.score) for d in top.data], expected[:2])
    assert [d.input for d in top.data] == [DOCUMENTS[d.index] for d in top.data]
    assert top.top_k == 2 and top.return_input is True

    many = mixedbread(server).rerank(query=QUERY, input=DOCUMENTS, top_k=100)
    assert_same_ranking([(d.index, d.score) for d in many.data], expected)


def test_mixedbread_objects_and_rank_fields(server: ServerProcess) -> None:
    expected = native_ranking(server)
    objects = [{"title": f"doc {i}", "body": d, "year": 2020 + i} for i, d in enumerate(DOCUMENTS)]
    response = mixedbread(server).rerank(
        query=QUERY, input=objects, rank_fields=["body"], return_input=True
    )
    assert_same_ranking([(d.index, d.score) for d in response.data], expected)
    assert [d.input for d in response.data] == [objects[d.index] for d in response.data]

    # Without rank_fields every field is read: "title: ...\nbody: ...\nyear: ..." per object.
    rendered = [f"title: doc {i}\nbody: {d}\nyear: {2020 + i}" for i, d in enumerate(DOCUMENTS)]
    whole = mixedbread(server).rerank(query=QUERY, input=objects)
    assert_same_ranking([(d.index, d.score) for d in whole.data], native_ranking(server, rendered))


@pytest.mark.parametrize(
    ("extra", "status", "fragment"),
    [
        ({"input": []}, 400, "documents is empty"),
        ({"input": "one string"}, 422, "input"),
        ({"input": [{"a": 1}], "rank_fields": ["b"]}, 422, "documents[0] has none"),
        ({"rank_fields": []}, 422, "rank_fields is empty"),
        ({"top_k": 0}, 400, "top_k"),
        ({"top_k": -2}, 422, "top_k"),
        ({"rewrite_query": True}, 400, "rewrite_query"),
        ({"return_input": "yes"}, 422, "return_input"),
        ({"model": "mxbai-rerank-large-v2"}, 404, "not served"),
        ({"input": ["d"] * 21}, 413, "at most 20"),
        ({"query": ""}, 400, "query is empty"),
    ],
)
def test_mixedbread_bad_input(http: httpx.Client, extra: dict, status: int, fragment: str) -> None:
    response = http.post("/v1/reranking", json={"query": QUERY, "input": DOCUMENTS, **extra})
    assert response.status_code == status, response.text
    assert fragment in error_message(response)


def test_mixedbread_sdk_raises_its_own_errors(server: ServerProcess) -> None:
    import mixedbread as sdk

    with pytest.raises(sdk.NotFoundError, match="not served here"):
        mixedbread(server).rerank(model="nope", query=QUERY, input=DOCUMENTS)
    with pytest.raises(sdk.BadRequestError, match="rewrite_query"):
        mixedbread(server).rerank(query=QUERY, input=DOCUMENTS, rewrite_query=True)


# --- Object documents on the Cohere route ----------------------------------------------------


def test_cohere_v1_sdk_rank_fields(server: ServerProcess) -> None:
    import cohere

    expected = native_ranking(server)
    objects = [{"title": f"doc {i}", "content": d} for i, d in enumerate(DOCUMENTS)]
    client = cohere.Client(api_key="not-needed", base_url=server.url, timeout=60)
    response = client.rerank(
        model=MODEL, query=QUERY, documents=objects, rank_fields=["content"], return_documents=True
    )
    assert_same_ranking([(r.index, r.relevance_score) for r in response.results], expected)
    for result in response.results:  # the object comes back as it was sent
        assert result.document is not None
        assert result.document.dict(exclude_none=True) == objects[result.index]


def test_cohere_objects_rendering(http: httpx.Client, server: ServerProcess) -> None:
    objects = [
        {"text": "ignored without rank_fields?", "meta": {"title": "Orchards"}, "n": [1, 2]},
        {"text": DOCUMENTS[0]},
    ]
    # Default rank field is `text`, as Cohere's.
    answer = http.post("/v1/rerank", json={"query": QUERY, "documents": objects}).json()
    assert_same_ranking(
        [(r["index"], r["relevance_score"]) for r in answer["results"]],
        native_ranking(server, [objects[0]["text"], objects[1]["text"]]),
    )
    # Several fields, a dotted name and a non-string value, in rank_fields' order.
    answer = http.post(
        "/v1/rerank",
        json={
            "query": QUERY,
            "documents": objects[:1],
            "rank_fields": ["meta.title", "n", "missing"],
            "return_documents": True,
        },
    ).json()
    expected = native_ranking_raw(server, QUERY, ["meta.title: Orchards\nn: [1,2]"])
    assert answer["results"][0]["relevance_score"] == pytest.approx(expected[0][1], abs=1e-5)
    assert answer["results"][0]["document"] == objects[0]
    assert answer["data"][0]["document"] == "meta.title: Orchards\nn: [1,2]"


# --- OpenAPI -----------------------------------------------------------------------------------


def test_openapi_documents_every_new_route_and_body(http: httpx.Client) -> None:
    """Schemathesis (tests/test_openapi.py) fuzzes whatever this documents, so check it is all
    there: each route, its request body's schema and its response's."""
    spec = http.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    routes = {
        "/v1/rerank": ("CohereRerankRequest", "CohereRerankResponse"),
        "/v2/rerank": ("CohereRerankRequest", "CohereRerankResponse"),
        "/v1/reranking": ("MixedbreadRerankRequest", "MixedbreadRerankResponse"),
        "/score": ("ScoreRequest", "ScoreResponse"),
        "/v1/score": ("ScoreRequest", "ScoreResponse"),
    }
    for path, (request_model, response_model) in routes.items():
        post = spec["paths"][path]["post"]
        body = post["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{request_model}"}, path
        ok = post["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{response_model}"}, path
        assert {"400", "404", "413", "422"} <= set(post["responses"]), path
    fields = set(schemas["CohereRerankRequest"]["properties"])
    assert {"top_k", "truncation", "truncate_prompt_tokens", "use_activation"} <= fields
    assert {"rank_fields", "return_documents", "instruction"} <= fields
    assert {"text_1", "text_2", "queries", "documents", "items", "data_1", "data_2"} <= set(
        schemas["ScoreRequest"]["properties"]
    )
    assert {"input", "rank_fields", "top_k", "return_input"} <= set(
        schemas["MixedbreadRerankRequest"]["properties"]
    )
    assert {"data", "object", "results", "meta", "usage"} <= set(
        schemas["CohereRerankResponse"]["properties"]
    )
