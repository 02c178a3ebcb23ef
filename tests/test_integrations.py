"""The RAG applications people deploy, each calling a real server exactly as its source does.

Where the integration is a package that installs cleanly here, the test runs it (Haystack's
TEI and Cohere rankers, LangChain's Voyage reranker, LlamaIndex's Cohere, Jina, Xinference and
Mixedbread rerankers). Where it is an application (Open WebUI, Dify, RAGFlow) or a package
whose dependencies conflict with rerankd's (LightRAG, Dify's plugin SDK), the test sends the
body and headers its request-building code sends and reads the fields it reads; each test
names the file it follows. Every one must get the native route's order and scores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests

from tests.server import ServerProcess, run_server
from tests.test_clients import DOCUMENTS, MODEL, QUERY, assert_same_ranking, native_ranking

API_KEY = "integration-key"


@pytest.fixture(scope="module")
def server(bert_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--model", f"{bert_model}={MODEL}"]
    with run_server(args, log_dir=tmp_path_factory.mktemp("integrations")) as running:
        yield running


@pytest.fixture(scope="module")
def expected(server: ServerProcess) -> list[tuple[int, float]]:
    return native_ranking(server)


def by_position(scores: list[float]) -> list[tuple[int, float]]:
    """Scores listed in document order, as (index, score) best first."""
    return sorted(enumerate(scores), key=lambda pair: -pair[1])


# --- Open WebUI --------------------------------------------------------------------------------


def test_open_webui_external_reranker(server: ServerProcess, expected) -> None:
    """open-webui/open-webui backend/open_webui/retrieval/models/external.py: POST to the
    configured URL (default .../v1/rerank) `{model, query, documents, top_n: len(docs)}` with
    `Authorization: Bearer <key>` (empty when none is set); sorts `results` by `index` and
    reads `relevance_score`."""
    response = requests.post(
        f"{server.url}/v1/rerank",
        headers={"Content-Type": "application/json", "Authorization": "Bearer "},
        json={"model": MODEL, "query": QUERY, "documents": DOCUMENTS, "top_n": len(DOCUMENTS)},
        timeout=60,
    )
    response.raise_for_status()
    data = response.json()
    assert "results" in data
    scores = [r["relevance_score"] for r in sorted(data["results"], key=lambda x: x["index"])]
    assert len(scores) == len(DOCUMENTS)
    assert_same_ranking(by_position(scores), expected)


# --- Dify --------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["/v1", ""], ids=["endpoint-v1", "endpoint-root"])
@pytest.mark.parametrize("top_n", [None, 3])
def test_dify_openai_compatible_rerank(
    server: ServerProcess, expected, endpoint: str, top_n: int | None
) -> None:
    """dify_plugin interfaces/model/openai_compatible/rerank.py (OAICompatRerankModel, which
    Dify's OpenAI-API-compatible, vLLM and similar providers use): POST `{endpoint_url}/rerank`
    with `data=json.dumps({model, query, documents, top_n, return_documents: true})`,
    `Authorization: Bearer None` when no key is set; reads `results[].relevance_score`,
    `index`, and `document` as `{text}` or a string (falling back to its own copy)."""
    data = {
        "model": MODEL,
        "query": QUERY,
        "documents": DOCUMENTS,
        "top_n": top_n,
        "return_documents": True,
    }
    response = requests.post(
        f"{server.url}{endpoint}/rerank",
        headers={"Authorization": "Bearer None", "Content-Type": "application/json"},
        data=json.dumps(data),
        timeout=60,
    )
    response.raise_for_status()
    results = response.json()["results"]
    got = [(r["index"], r["relevance_score"]) for r in results]
    assert_same_ranking(got, expected[: top_n or len(DOCUMENTS)])
    for result in results:
        document = result.get("document", {})
        text = document.get("text") if isinstance(document, dict) else document
        assert text == DOCUMENTS[result["index"]]


# --- RAGFlow -----------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["/v1/rerank", "/v1"], ids=["full-url", "base-url"])
def test_ragflow_openai_api_compatible(server: ServerProcess, expected, base: str) -> None:
    """infiniflow/ragflow rag/llm/rerank_model.py OpenAI_APIRerank (also LocalAI, GPUStack):
    appends `/rerank` unless the URL has it; `{model, query, documents, top_n: len}`, Bearer
    key; `rank[d["index"]] = d["relevance_score"]` over `results`."""
    url = f"{server.url}{base}"
    url = url if "/rerank" in url else url.rstrip("/") + "/rerank"
    response = requests.post(
        url,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
        json={"model": MODEL, "query": QUERY, "documents": DOCUMENTS, "top_n": len(DOCUMENTS)},
        timeout=30,
    )
    response.raise_for_status()
    rank = [0.0] * len(DOCUMENTS)
    for d in response.json().get("results", []):
        rank[d["index"]] = d["relevance_score"]
    assert_same_ranking(by_position(rank), expected)


def test_ragflow_jina_reads_usage_total_tokens(server: ServerProcess, expected) -> None:
    """RAGFlow JinaRerank: the same body to a configurable URL; its token count comes from
    `usage.total_tokens` (common/token_utils.py total_token_count_from_response)."""
    response = requests.post(
        f"{server.url}/v1/rerank",
        headers={"Content-Type": "application/json", "Authorization": "Bearer x"},
        json={"model": MODEL, "query": QUERY, "documents": DOCUMENTS, "top_n": len(DOCUMENTS)},
        timeout=30,
    )
    response.raise_for_status()
    res = response.json()
    rank = [0.0] * len(DOCUMENTS)
    for d in res.get("results", []):
        rank[d["index"]] = d["relevance_score"]
    assert_same_ranking(by_position(rank), expected)
    assert isinstance(res["usage"]["total_tokens"], int)


def test_ragflow_xinference_sends_booleans_as_strings(server: ServerProcess, expected) -> None:
    """RAGFlow XInferenceRerank: `"return_documents": "true"`, `"return_len": "true"` (strings),
    no top_n, to `{base}/v1/rerank`; reads `results[].index` and `relevance_score`."""
    response = requests.post(
        f"{server.url}/v1/rerank",
        headers={"Content-Type": "application/json", "accept": "application/json"},
        json={
            "model": MODEL,
            "query": QUERY,
            "return_documents": "true",
            "return_len": "true",
            "documents": DOCUMENTS,
        },
        timeout=30,
    )
    response.raise_for_status()
    results = response.json()["results"]
    rank = [0.0] * len(DOCUMENTS)
    for d in results:
        rank[d["index"]] = d["relevance_score"]
    assert_same_ranking(by_position(rank), expected)
    assert all(d["document"]["text"] == DOCUMENTS[d["index"]] for d in results)


def test_string_booleans_are_words_not_anything_truthy(server: ServerProcess) -> None:
    """Leniency stops at "true"/"false": a boolean of "yes" is a 422, and so is a top_n of
    "3" (a number as a string could silently change how many results come back)."""
    for extra in ({"return_documents": "yes"}, {"top_n": "3"}, {"raw_scores": 1}):
        response = requests.post(
            f"{server.url}/v1/rerank",
            json={"query": QUERY, "documents": DOCUMENTS, **extra},
            timeout=30,
        )
        assert response.status_code == 422, (extra, response.text)
        assert next(iter(extra)) in response.json()["error"]["message"]
    native = requests.post(
        f"{server.url}/rerank",
        json={"query": QUERY, "documents": DOCUMENTS, "return_documents": "true"},
        timeout=30,
    )
    assert native.status_code == 422, "the native route stays strict"


def test_ragflow_huggingface_tei_in_batches_of_eight(server: ServerProcess, expected) -> None:
    """RAGFlow HuggingfaceRerank: TEI's `/rerank` with `{query, texts, raw_scores: false,
    truncate: true}` in batches of 8, reading a bare list of `{index, score}`."""
    scores = [0.0] * len(DOCUMENTS)
    batch_size = 8
    for i in range(0, len(DOCUMENTS), batch_size):
        response = requests.post(
            f"{server.url}/rerank",
            headers={"Content-Type": "application/json"},
            json={
                "query": QUERY,
                "texts": DOCUMENTS[i : i + batch_size],
                "raw_scores": False,
                "truncate": True,
            },
            timeout=30,
        )
        response.raise_for_status()
        for o in response.json():
            scores[o["index"] + i] = o["score"]
    assert_same_ranking(by_position(scores), expected)


def test_ragflow_cohere_and_vllm_factories(server: ServerProcess, expected) -> None:
    """RAGFlow CoHereRerank (its "Cohere" and "VLLM" factories): the cohere SDK's v1 `Client`
    with `base_url`, `rerank(model, query, documents, top_n=len, return_documents=False)`."""
    import cohere

    client = cohere.Client(api_key=API_KEY, timeout=30.0, base_url=server.url)
    res = client.rerank(
        model=MODEL, query=QUERY, documents=DOCUMENTS, top_n=len(DOCUMENTS), return_documents=False
    )
    rank = [0.0] * len(DOCUMENTS)
    for d in res.results:
        rank[d.index] = d.relevance_score
    assert_same_ranking(by_position(rank), expected)


# --- LightRAG ----------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["cohere", "jina"])
def test_lightrag_generic_rerank_api(server: ServerProcess, expected, flavour: str) -> None:
    """lightrag/rerank.py generic_rerank_api (lightrag-hku 1.5): POST to the full URL given as
    base_url with `{model, query, documents}`, plus `top_n` when set, plus `return_documents:
    false` for Jina only; keeps results whose `index` is an int in range and whose
    `relevance_score` is a finite float."""
    payload: dict = {"model": MODEL, "query": QUERY, "documents": DOCUMENTS, "top_n": 4}
    url = f"{server.url}/v2/rerank" if flavour == "cohere" else f"{server.url}/v1/rerank"
    if flavour == "jina":
        payload["return_documents"] = False
    response = httpx.post(
        url,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
        json=payload,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    results = response.json().get("results", [])
    kept = [
        (r["index"], float(r["relevance_score"]))
        for r in results
        if isinstance(r.get("index"), int) and 0 <= r["index"] < len(DOCUMENTS)
    ]
    assert_same_ranking(kept, expected[:4])


# --- Haystack (real packages) ------------------------------------------------------------------


def haystack_documents():
    from haystack import Document

    return [Document(content=d, meta={"n": i}) for i, d in enumerate(DOCUMENTS)]


def test_haystack_tei_ranker(server: ServerProcess, expected) -> None:
    from haystack_integrations.components.rankers.huggingface_api import HuggingFaceTEIRanker

    ranker = HuggingFaceTEIRanker(url=server.url, top_k=3, timeout=60)
    ranked = ranker.run(query=QUERY, documents=haystack_documents())["documents"]
    assert_same_ranking([(d.meta["n"], d.score) for d in ranked], expected[:3])


def test_haystack_tei_ranker_truncation(server: ServerProcess, expected) -> None:
    from haystack_integrations.components.rankers.huggingface_api import (
        HuggingFaceTEIRanker,
        TruncationDirection,
    )

    ranker = HuggingFaceTEIRanker(url=server.url, top_k=len(DOCUMENTS), timeout=60)
    ranked = ranker.run(
        query=QUERY, documents=haystack_documents(), truncation_direction=TruncationDirection.LEFT
    )["documents"]
    assert_same_ranking([(d.meta["n"], d.score) for d in ranked], expected)


def test_haystack_cohere_ranker(server: ServerProcess, expected) -> None:
    from haystack.utils import Secret
    from haystack_integrations.components.rankers.cohere import CohereRanker

    ranker = CohereRanker(
        model=MODEL, top_k=4, api_key=Secret.from_token(API_KEY), api_base_url=server.url
    )
    ranked = ranker.run(query=QUERY, documents=haystack_documents())["documents"]
    assert_same_ranking([(d.meta["n"], d.score) for d in ranked], expected[:4])


# --- LangChain (real packages; CohereRerank is in tests/test_clients.py) -----------------------


def test_langchain_voyageai_rerank(server: ServerProcess, expected) -> None:
    from langchain_core.documents import Document
    from langchain_voyageai import VoyageAIRerank

    reranker = VoyageAIRerank(model=MODEL, api_key=API_KEY, base_url=f"{server.url}/v1", top_k=3)
    docs = [Document(page_content=d, metadata={"n": i}) for i, d in enumerate(DOCUMENTS)]
    compressed = reranker.compress_documents(docs, QUERY)
    assert_same_ranking(
        [(d.metadata["n"], d.metadata["relevance_score"]) for d in compressed], expected[:3]
    )


# --- LlamaIndex (real packages; the TEI reranker is in tests/test_clients.py) ------------------


def llama_nodes():
    from llama_index.core.schema import NodeWithScore, TextNode

    return [
        NodeWithScore(node=TextNode(text=d, id_=f"doc-{i}"), score=0.1)
        for i, d in enumerate(DOCUMENTS)
    ]


def llama_ranking(ranked) -> list[tuple[int, float]]:
    return [(int(n.node.node_id.removeprefix("doc-")), n.score) for n in ranked]


def test_llamaindex_cohere_rerank(server: ServerProcess, expected) -> None:
    from llama_index.core.schema import QueryBundle
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    reranker = CohereRerank(top_n=3, model=MODEL, api_key=API_KEY, base_url=server.url)
    ranked = reranker.postprocess_nodes(llama_nodes(), QueryBundle(QUERY))
    assert_same_ranking(llama_ranking(ranked), expected[:3])


def test_llamaindex_jina_rerank(server: ServerProcess, expected) -> None:
    from llama_index.core.schema import QueryBundle
    from llama_index.postprocessor.jinaai_rerank import JinaRerank

    reranker = JinaRerank(top_n=3, model=MODEL, base_url=f"{server.url}/v1", api_key=API_KEY)
    ranked = reranker.postprocess_nodes(llama_nodes(), QueryBundle(QUERY))
    assert_same_ranking(llama_ranking(ranked), expected[:3])


def test_llamaindex_xinference_rerank(server: ServerProcess, expected) -> None:
    from llama_index.core.schema import QueryBundle
    from llama_index.postprocessor.xinference_rerank import XinferenceRerank

    reranker = XinferenceRerank(top_n=3, model=MODEL, base_url=server.url)
    ranked = reranker.postprocess_nodes(llama_nodes(), QueryBundle(QUERY))
    assert_same_ranking(llama_ranking(ranked), expected[:3])


def test_llamaindex_mixedbread_rerank(
    server: ServerProcess, expected, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It takes no base URL, but the mixedbread SDK under it reads MIXEDBREAD_BASE_URL."""
    from llama_index.core.schema import QueryBundle
    from llama_index.postprocessor.mixedbreadai_rerank import MixedbreadAIRerank

    monkeypatch.setenv("MIXEDBREAD_BASE_URL", server.url)
    reranker = MixedbreadAIRerank(top_n=10, model=MODEL, api_key=API_KEY, max_retries=0)
    ranked = reranker.postprocess_nodes(llama_nodes(), QueryBundle(QUERY))
    assert_same_ranking(llama_ranking(ranked), expected)  # top_n 10 > 6 documents: all
