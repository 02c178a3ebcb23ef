"""Real client packages, unmodified, against the real server.

Each client speaks its own dialect (recorded below from the installed sources); every one
must get the same order and the same scores as the native `POST /rerank` route.

- cohere `ClientV2(base_url=URL).rerank` -> `POST URL/v2/rerank` (the SDK appends `v2/rerank`
  to `base_url` as it is; only cohere.com URLs lose a `/v1`). Body `{model, query, documents:
  [str], top_n?, max_tokens_per_doc?}`, `Authorization: Bearer <api_key>` always (a key is
  mandatory client-side). Parses `results[].index`, `results[].relevance_score` (required),
  `id`, `meta` (optional).
- cohere `Client(base_url=URL).rerank` -> `POST URL/v1/rerank`, `{model, query, documents: [str |
  {text, ...}], top_n?, return_documents?, rank_fields?, max_chunks_per_doc?}`; parses
  `results[].document.text` as well.
- LangChain `CohereRerank` -> cohere `ClientV2.rerank`, always sending `top_n` (default 3, may
  exceed the number of documents, or `null`) and `max_tokens_per_doc: null`.
- xinference-client `RESTfulClient(URL)` -> `GET /v1/cluster/auth` (404 or `{"auth": bool}`;
  only when `auth` is true does it ever send its api key), `.get_model(uid)` -> `GET
  /v1/models/{uid}` needing `model_type == "rerank"`, `.rerank()` -> `POST /v1/rerank` with
  `{model, documents, query, top_n, max_chunks_per_doc, return_documents, return_len}` (nulls
  included) plus `kwargs: "{}"` (a JSON string); non-200 reads `response.json()["detail"]`.
- infinity-client `api.default.rerank` -> `POST /rerank` with `{query, documents,
  return_documents: false, raw_scores: false, model: "default/not-specified"}`; parses
  `ReRankResult`: `results[].relevance_score`, `results[].index` (required), `document` (str or
  null), `model` and `usage.{prompt_tokens,total_tokens}` (required), `object` ("rerank" only),
  `id`, `created`.
- LlamaIndex `TextEmbeddingInference` -> `POST URL/rerank` with only `{query, texts}`,
  `Authorization: <auth_token as given>`; expects a bare list of `{index, score}` covering
  every text (asserts the length), then sorts and cuts to its own `top_n`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from tests.server import ServerProcess, run_server

MODEL = "tiny-bert"
API_KEY = "secret"
TOLERANCE = 1e-5

QUERY = "Which fruit grows in orchards in the autumn?"
DOCUMENTS = [
    "Apples and pears are fruit that grow in orchards in the autumn.",
    "Kubernetes schedules pods across the nodes of a cluster.",
    "The Eiffel Tower is in Paris, the capital of France.",
    "Apple released a new iPhone with a titanium frame and a faster chip.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Reranking with a cross-encoder reads the query and the passage together.",
]


@pytest.fixture
def server(shared_bert_server: ServerProcess) -> ServerProcess:
    """The tiny BERT as MODEL (shared with other files; these tests send at most 20 documents,
    its limit)."""
    return shared_bert_server


@pytest.fixture(scope="module")
def auth_server(
    bert_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log_dir = tmp_path_factory.mktemp("clients-auth-server")
    args = ["--model", f"{bert_model}={MODEL}", "--api-keys", API_KEY]
    with run_server(args, log_dir=log_dir) as running:
        yield running


def native_ranking(
    server: ServerProcess,
    documents: Sequence[str] = DOCUMENTS,
    query: str = QUERY,
    headers: dict[str, str] | None = None,
) -> list[tuple[int, float]]:
    """(index, score), best first, from the native route."""
    response = httpx.post(
        f"{server.url}/rerank",
        json={"query": query, "documents": list(documents), "model": MODEL},
        headers=headers,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    ranking = [(item["index"], float(item["score"])) for item in body["results"]]
    assert len(ranking) == len(documents)
    scores = [score for _, score in ranking]
    assert scores == sorted(scores, reverse=True)
    assert max(scores) - min(scores) > 1e-3, "the fixture model should spread its scores"
    return ranking


def assert_same_ranking(got: Sequence[tuple[int, float]], expected: Sequence[tuple[int, float]]):
    """Same indexes in the same order (up to exact ties) and the same scores."""
    assert len(got) == len(expected), (got, expected)
    by_index = dict(expected)
    for position, ((index, score), (_, expected_score)) in enumerate(
        zip(got, expected, strict=True)
    ):
        assert math.isclose(score, by_index[index], abs_tol=TOLERANCE), (position, got, expected)
        assert math.isclose(score, expected_score, abs_tol=TOLERANCE), (position, got, expected)
    assert [i for i, _ in got] == [i for i, _ in expected] or _only_ties_differ(got, expected)


def _only_ties_differ(got, expected) -> bool:
    return all(
        math.isclose(g, e, abs_tol=TOLERANCE) for (_, g), (_, e) in zip(got, expected, strict=True)
    )


# --- cohere ----------------------------------------------------------------------------------


def cohere_v2(url: str, api_key: str = "not-needed"):
    import cohere

    return cohere.ClientV2(api_key=api_key, base_url=url, timeout=60)


def test_cohere_client_v2_rerank(server: ServerProcess) -> None:
    expected = native_ranking(server)
    response = cohere_v2(server.url).rerank(model=MODEL, query=QUERY, documents=DOCUMENTS)
    got = [(r.index, r.relevance_score) for r in response.results]
    assert_same_ranking(got, expected)
    assert response.id


def test_cohere_client_v2_rerank_top_n(server: ServerProcess) -> None:
    expected = native_ranking(server)
    response = cohere_v2(server.url).rerank(
        model=MODEL, query=QUERY, documents=DOCUMENTS, top_n=2, max_tokens_per_doc=512
    )
    got = [(r.index, r.relevance_score) for r in response.results]
    assert_same_ranking(got, expected[:2])


@pytest.mark.parametrize("as_objects", [False, True], ids=["strings", "text-objects"])
def test_cohere_v1_client_rerank(server: ServerProcess, as_objects: bool) -> None:
    import cohere

    expected = native_ranking(server)
    documents = [{"text": d} for d in DOCUMENTS] if as_objects else DOCUMENTS
    client = cohere.Client(api_key="not-needed", base_url=server.url, timeout=60)
    response = client.rerank(
        model=MODEL, query=QUERY, documents=documents, top_n=4, return_documents=True
    )
    got = [(r.index, r.relevance_score) for r in response.results]
    assert_same_ranking(got, expected[:4])
    for result in response.results:
        assert result.document is not None
        assert result.document.text == DOCUMENTS[result.index]


def test_cohere_v1_client_without_documents(server: ServerProcess) -> None:
    import cohere

    expected = native_ranking(server)
    client = cohere.Client(api_key="not-needed", base_url=server.url, timeout=60)
    response = client.rerank(model=MODEL, query=QUERY, documents=DOCUMENTS, return_documents=False)
    got = [(r.index, r.relevance_score) for r in response.results]
    assert_same_ranking(got, expected)
    assert all(r.document is None for r in response.results)


# --- LangChain -------------------------------------------------------------------------------


def test_langchain_cohere_rerank(server: ServerProcess) -> None:
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    expected = native_ranking(server)
    docs = [Document(page_content=d, metadata={"n": i}) for i, d in enumerate(DOCUMENTS)]
    reranker = CohereRerank(client=cohere_v2(server.url), model=MODEL, top_n=3)
    compressed = reranker.compress_documents(docs, QUERY)
    got = [(d.metadata["n"], d.metadata["relevance_score"]) for d in compressed]
    assert_same_ranking(got, expected[:3])
    assert [d.page_content for d in compressed] == [DOCUMENTS[i] for i, _ in got]


def test_langchain_cohere_rerank_top_n_above_count_returns_all(server: ServerProcess) -> None:
    """LangChain's default top_n is 3; Cohere returns every document when there are fewer."""
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    few = DOCUMENTS[:2]
    expected = native_ranking(server, few)
    docs = [Document(page_content=d, metadata={"n": i}) for i, d in enumerate(few)]
    compressed = CohereRerank(client=cohere_v2(server.url), model=MODEL).compress_documents(
        docs, QUERY
    )
    got = [(d.metadata["n"], d.metadata["relevance_score"]) for d in compressed]
    assert_same_ranking(got, expected)

    expected = native_ranking(server)
    docs = [Document(page_content=d, metadata={"n": i}) for i, d in enumerate(DOCUMENTS)]
    reranker = CohereRerank(client=cohere_v2(server.url), model=MODEL, top_n=100)
    got = [
        (d.metadata["n"], d.metadata["relevance_score"])
        for d in reranker.compress_documents(docs, QUERY)
    ]
    assert_same_ranking(got, expected)


def test_langchain_cohere_rerank_with_base_url(server: ServerProcess) -> None:
    """Built from base_url (not a client), with top_n=None: sends `"top_n": null`."""
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    expected = native_ranking(server)
    docs = [Document(page_content=d, metadata={"n": i}) for i, d in enumerate(DOCUMENTS)]
    reranker = CohereRerank(
        base_url=server.url, cohere_api_key="not-needed", model=MODEL, top_n=None
    )
    got = [
        (d.metadata["n"], d.metadata["relevance_score"])
        for d in reranker.compress_documents(docs, QUERY)
    ]
    assert_same_ranking(got, expected)


# --- Xinference ------------------------------------------------------------------------------


def test_xinference_client_rerank(server: ServerProcess) -> None:
    from xinference_client import RESTfulClient

    expected = native_ranking(server)
    client = RESTfulClient(server.url)
    assert MODEL in client.list_models()
    model = client.get_model(MODEL)
    response = model.rerank(DOCUMENTS, QUERY, top_n=3)
    got = [(r["index"], r["relevance_score"]) for r in response["results"]]
    assert_same_ranking(got, expected[:3])

    response = model.rerank(DOCUMENTS, QUERY, return_documents=True)
    got = [(r["index"], r["relevance_score"]) for r in response["results"]]
    assert_same_ranking(got, expected)
    assert [r["document"]["text"] for r in response["results"]] == [DOCUMENTS[i] for i, _ in got]


def test_xinference_client_errors_are_runtime_errors(server: ServerProcess) -> None:
    """Its rerank reads `response.json()["detail"]` on any non-200 answer."""
    from xinference_client import RESTfulClient

    client = RESTfulClient(server.url)
    with pytest.raises(RuntimeError):
        client.get_model("no-such-model")
    with pytest.raises(RuntimeError):
        client.get_model(MODEL).rerank(DOCUMENTS, "")


# --- Infinity --------------------------------------------------------------------------------


def test_infinity_client_rerank(server: ServerProcess) -> None:
    from infinity_client import Client
    from infinity_client.api.default import rerank
    from infinity_client.models import RerankInput, ReRankResult

    expected = native_ranking(server)
    client = Client(base_url=server.url, timeout=httpx.Timeout(60))
    body = RerankInput(query=QUERY, documents=DOCUMENTS, model=MODEL, return_documents=True)
    response = rerank.sync_detailed(client=client, body=body)
    assert response.status_code == 200, response.content
    result = response.parsed
    assert isinstance(result, ReRankResult), response.content
    got = [(r.index, r.relevance_score) for r in result.results]
    assert_same_ranking(got, expected)
    assert [r.document for r in result.results] == [DOCUMENTS[i] for i, _ in got]
    assert isinstance(result.usage.prompt_tokens, int)  # 0 when every pair was cached
    assert result.usage.total_tokens >= result.usage.prompt_tokens


def test_infinity_client_default_body(server: ServerProcess) -> None:
    """Its defaults: model "default/not-specified", return_documents and raw_scores false."""
    from infinity_client import Client
    from infinity_client.api.default import rerank
    from infinity_client.models import RerankInput, ReRankResult

    expected = native_ranking(server)
    client = Client(base_url=server.url, timeout=httpx.Timeout(60))
    body = RerankInput(query=QUERY, documents=DOCUMENTS, top_n=2)
    response = rerank.sync_detailed(client=client, body=body)
    assert response.status_code == 200, response.content
    assert isinstance(response.parsed, ReRankResult), response.content
    got = [(r.index, r.relevance_score) for r in response.parsed.results]
    assert_same_ranking(got, expected[:2])


# --- LlamaIndex (TEI dialect) ----------------------------------------------------------------


def tei_nodes():
    from llama_index.core.schema import NodeWithScore, TextNode

    return [
        NodeWithScore(node=TextNode(text=d, id_=f"doc-{i}"), score=0.1)
        for i, d in enumerate(DOCUMENTS)
    ]


@pytest.mark.parametrize("top_n", [3, len(DOCUMENTS)])
def test_llamaindex_tei_rerank(server: ServerProcess, top_n: int) -> None:
    from llama_index.core.schema import QueryBundle
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    expected = native_ranking(server)
    postprocessor = TextEmbeddingInference(base_url=server.url, top_n=top_n, model_name=MODEL)
    ranked = postprocessor.postprocess_nodes(tei_nodes(), QueryBundle(QUERY))
    got = [(int(n.node.node_id.removeprefix("doc-")), n.score) for n in ranked]
    assert_same_ranking(got, expected[:top_n])


# --- API keys --------------------------------------------------------------------------------


def test_cohere_with_api_key(auth_server: ServerProcess) -> None:
    import cohere

    expected = native_ranking(auth_server, headers={"Authorization": f"Bearer {API_KEY}"})
    response = cohere_v2(auth_server.url, API_KEY).rerank(
        model=MODEL, query=QUERY, documents=DOCUMENTS
    )
    assert_same_ranking([(r.index, r.relevance_score) for r in response.results], expected)

    with pytest.raises(cohere.errors.UnauthorizedError):
        cohere_v2(auth_server.url, "wrong").rerank(model=MODEL, query=QUERY, documents=DOCUMENTS)
    v1 = cohere.Client(api_key="wrong", base_url=auth_server.url, timeout=60)
    with pytest.raises(cohere.errors.UnauthorizedError):
        v1.rerank(model=MODEL, query=QUERY, documents=DOCUMENTS)


def test_api_key_headers(auth_server: ServerProcess) -> None:
    body = {"query": QUERY, "documents": DOCUMENTS, "model": MODEL}
    url = f"{auth_server.url}/rerank"
    assert httpx.post(url, json=body, timeout=60).status_code == 401
    assert httpx.post(url, json=body, headers={"X-API-Key": "wrong"}, timeout=60).status_code == 401
    ok = httpx.post(url, json=body, headers={"X-API-Key": API_KEY}, timeout=60)
    assert ok.status_code == 200, ok.text


def test_xinference_with_api_key(auth_server: ServerProcess) -> None:
    """The client sends its key only if `GET /v1/cluster/auth` (no key) says `auth: true`."""
    from xinference_client import RESTfulClient

    expected = native_ranking(auth_server, headers={"X-API-Key": API_KEY})
    model = RESTfulClient(auth_server.url, api_key=API_KEY).get_model(MODEL)
    response = model.rerank(DOCUMENTS, QUERY)
    got = [(r["index"], r["relevance_score"]) for r in response["results"]]
    assert_same_ranking(got, expected)

    with pytest.raises(RuntimeError):
        RESTfulClient(auth_server.url, api_key="wrong").get_model(MODEL)


def test_infinity_and_llamaindex_with_api_key(auth_server: ServerProcess) -> None:
    from infinity_client import AuthenticatedClient
    from infinity_client.api.default import rerank
    from infinity_client.models import RerankInput, ReRankResult
    from llama_index.core.schema import QueryBundle
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    expected = native_ranking(auth_server, headers={"X-API-Key": API_KEY})

    client = AuthenticatedClient(base_url=auth_server.url, token=API_KEY, timeout=httpx.Timeout(60))
    body = RerankInput(query=QUERY, documents=DOCUMENTS, model=MODEL)
    response = rerank.sync_detailed(client=client, body=body)
    assert isinstance(response.parsed, ReRankResult), response.content
    assert_same_ranking([(r.index, r.relevance_score) for r in response.parsed.results], expected)

    postprocessor = TextEmbeddingInference(
        base_url=auth_server.url, top_n=len(DOCUMENTS), auth_token=f"Bearer {API_KEY}"
    )
    ranked = postprocessor.postprocess_nodes(tei_nodes(), QueryBundle(QUERY))
    got = [(int(n.node.node_id.removeprefix("doc-")), n.score) for n in ranked]
    assert_same_ranking(got, expected)
