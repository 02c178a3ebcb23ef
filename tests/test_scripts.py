"""An honest first run: the English-only built-in model says when it gets text it never saw.

The seed tutorial's own example is Chinese. On a real server with the built-in model the
response carries a `Warning` header in every dialect, and the log names the flag that serves
bge-reranker-v2-m3, once; English text and a multilingual model get no warning.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from rerankd.scripts import MULTILINGUAL_FLAG, script_counts, script_notice, untrained_share
from tests.server import ServerProcess, run_server

CHINESE_QUERY = "苹果手机有哪些新功能?"
CHINESE_DOCUMENTS = [  # the built-in model puts the banana first, the iPhone last
    "苹果是一种很受欢迎的水果，口感清脆香甜。",
    "iPhone 15 Pro 采用钛金属边框和 USB-C 接口。",
    "苹果公司发布的新款手机支持卫星通信功能。",
    "香蕉富含钾元素。",
]
ENGLISH_QUERY = "What new features does the latest iPhone have?"
ENGLISH_DOCUMENTS = [
    "The iPhone 15 Pro has a titanium frame and a USB-C port.",
    "Apples are a common fruit rich in vitamin C.",
]


def test_letters_are_counted_by_script_and_the_rest_ignored() -> None:
    assert script_counts("苹果手机 iPhone 15!") == {"Han": 4, "Latin": 6}
    assert script_counts("Привет, мир") == {"Cyrillic": 9}
    assert script_counts("12345 ?!") == {}


def test_the_untrained_share_names_the_commonest_foreign_script() -> None:
    latin = frozenset({"Latin"})
    assert untrained_share(ENGLISH_DOCUMENTS, latin) == (0.0, None)
    share, script = untrained_share(CHINESE_DOCUMENTS, latin)
    assert script == "Han" and share > 0.75
    share, script = untrained_share(["iPhone 的相机", "ひらがなとカタカナ"], latin)
    assert script == "Hiragana" and 0.5 < share < 1.0


def test_only_an_english_only_model_warns_and_only_when_mostly_foreign() -> None:
    assert script_notice("builtin", "builtin", ENGLISH_QUERY, ENGLISH_DOCUMENTS) is None
    assert script_notice("bge", "BAAI/bge-reranker-v2-m3", CHINESE_QUERY, CHINESE_DOCUMENTS) is None
    mostly_english = ["The iPhone is called 苹果手机 in Chinese, and it has a new camera."]
    assert script_notice("builtin", "builtin", ENGLISH_QUERY, mostly_english) is None
    notice = script_notice("builtin", "builtin", CHINESE_QUERY, ENGLISH_DOCUMENTS)
    assert notice is not None and "query" in notice and "Han" in notice
    assert MULTILINGUAL_FLAG in notice


@pytest.fixture(scope="module")
def builtin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log_dir = tmp_path_factory.mktemp("first-run")
    args = ["--model", "builtin", "--cors-origins", "https://app.example"]
    with run_server(args, log_dir=log_dir) as server:
        yield server


def warnings_of(response: httpx.Response) -> list[str]:
    return response.headers.get_list("warning")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/rerank", {"query": CHINESE_QUERY, "documents": CHINESE_DOCUMENTS}),
        ("/rerank", {"query": CHINESE_QUERY, "texts": CHINESE_DOCUMENTS}),
        (
            "/v1/rerank",
            {"model": "builtin", "query": CHINESE_QUERY, "documents": CHINESE_DOCUMENTS},
        ),
        ("/batch_rerank", {"queries": [{"query": CHINESE_QUERY, "documents": CHINESE_DOCUMENTS}]}),
        ("/v1/reranking", {"query": CHINESE_QUERY, "input": CHINESE_DOCUMENTS}),
        ("/score", {"text_1": CHINESE_QUERY, "text_2": CHINESE_DOCUMENTS}),
    ],
)
def test_chinese_on_the_builtin_model_gets_a_warning_header(
    builtin: ServerProcess, path: str, body: dict
) -> None:
    response = httpx.post(builtin.url + path, json=body, timeout=60)
    assert response.status_code == 200, response.text
    (warning,) = warnings_of(response)
    assert warning.startswith('299 rerankd "') and warning.endswith('"')
    assert "English-only" in warning and "Han script" in warning
    assert f"rerankd serve {MULTILINGUAL_FLAG}" in warning


def test_a_browser_on_another_origin_may_read_the_warning(builtin: ServerProcess) -> None:
    body = {"query": CHINESE_QUERY, "documents": CHINESE_DOCUMENTS}
    headers = {"Origin": "https://app.example"}
    response = httpx.post(builtin.url + "/rerank", json=body, headers=headers, timeout=60)
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert "warning" in exposed and warnings_of(response)


def test_english_gets_no_warning(builtin: ServerProcess) -> None:
    body = {"query": ENGLISH_QUERY, "documents": ENGLISH_DOCUMENTS}
    response = httpx.post(builtin.url + "/rerank", json=body, timeout=60)
    assert response.status_code == 200 and warnings_of(response) == []


def test_the_log_names_the_flag_that_serves_bge_m3_once(builtin: ServerProcess) -> None:
    body = {"query": CHINESE_QUERY, "documents": CHINESE_DOCUMENTS}
    for _ in range(2):
        assert httpx.post(builtin.url + "/rerank", json=body, timeout=60).status_code == 200
    lines = [json.loads(line) for line in builtin.logs().splitlines() if line.startswith("{")]
    found = [line for line in lines if line.get("logger") == "rerankd.scripts"]
    assert len(found) == 1, found  # once per model and script, not per request
    assert found[0]["level"] == "warning"
    assert "rerankd serve --model BAAI/bge-reranker-v2-m3" in found[0]["msg"]
    assert found[0]["script"] == "Han"


def test_a_multilingual_model_gets_no_warning(shared_xlmr_server: ServerProcess) -> None:
    body = {"query": CHINESE_QUERY, "documents": CHINESE_DOCUMENTS}
    response = httpx.post(shared_xlmr_server.url + "/rerank", json=body, timeout=60)
    assert response.status_code == 200 and warnings_of(response) == []


def header_text(response: httpx.Response) -> str:
    (warning,) = warnings_of(response)
    return warning.removeprefix('299 rerankd "').removesuffix('"').replace('\\"', '"')


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/rerank", {"query": CHINESE_QUERY, "documents": CHINESE_DOCUMENTS}),
        ("/v1/rerank", {"query": CHINESE_QUERY, "documents": CHINESE_DOCUMENTS}),
        (
            "/v2/rerank",
            {"model": "builtin", "query": CHINESE_QUERY, "documents": CHINESE_DOCUMENTS},
        ),
        ("/batch_rerank", {"queries": [{"query": CHINESE_QUERY, "documents": CHINESE_DOCUMENTS}]}),
    ],
)
def test_the_json_body_carries_the_warning_too(
    builtin: ServerProcess, path: str, body: dict
) -> None:
    """`curl -s` shows no header: the body's `warnings` says the same as the header."""
    response = httpx.post(builtin.url + path, json=body, timeout=60)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["warnings"] == [header_text(response)]
    assert "English-only" in data["warnings"][0] and MULTILINGUAL_FLAG in data["warnings"][0]
    if path.startswith("/v"):
        assert data["meta"]["warnings"] == data["warnings"]  # Cohere's own field
    if path == "/batch_rerank":
        assert data["results"][0]["warnings"] == data["warnings"]


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank", "/v2/rerank"])
def test_english_gets_an_empty_warnings_list(builtin: ServerProcess, path: str) -> None:
    body = {"query": ENGLISH_QUERY, "documents": ENGLISH_DOCUMENTS}
    data = httpx.post(builtin.url + path, json=body, timeout=60).json()
    assert data["warnings"] == []
    assert "warnings" not in data.get("meta", {})


def test_the_real_clients_parse_a_response_with_warnings(builtin: ServerProcess) -> None:
    """cohere (v1 and v2), xinference-client and infinity-client read past the new field."""
    import cohere
    from infinity_client import Client as InfinityClient
    from infinity_client.api.default import rerank
    from infinity_client.models import RerankInput, ReRankResult
    from xinference_client import RESTfulClient

    native = httpx.post(
        builtin.url + "/rerank",
        json={"query": CHINESE_QUERY, "documents": CHINESE_DOCUMENTS},
        timeout=60,
    ).json()
    expected = [r["index"] for r in native["results"]]
    v2 = cohere.ClientV2(api_key="x", base_url=builtin.url, timeout=60)
    response = v2.rerank(model="builtin", query=CHINESE_QUERY, documents=CHINESE_DOCUMENTS)
    assert [r.index for r in response.results] == expected
    assert response.meta is not None and response.meta.warnings == native["warnings"]
    v1 = cohere.Client(api_key="x", base_url=builtin.url, timeout=60)
    response_v1 = v1.rerank(model="builtin", query=CHINESE_QUERY, documents=CHINESE_DOCUMENTS)
    assert [r.index for r in response_v1.results] == expected
    xinference = RESTfulClient(builtin.url).get_model("builtin")
    answer = xinference.rerank(CHINESE_DOCUMENTS, CHINESE_QUERY)
    assert [r["index"] for r in answer["results"]] == expected
    infinity = InfinityClient(base_url=builtin.url, timeout=httpx.Timeout(60))
    body = RerankInput(query=CHINESE_QUERY, documents=CHINESE_DOCUMENTS, model="builtin")
    parsed = rerank.sync_detailed(client=infinity, body=body).parsed
    assert isinstance(parsed, ReRankResult)
    assert [r.index for r in parsed.results] == expected


def test_rerankd_rerank_prints_the_warning(builtin: ServerProcess) -> None:
    """On stderr, from a server (`--endpoint`) and in process alike; stdout stays the table."""
    for where in (["--endpoint", builtin.url], ["--model", "builtin"]):
        result = subprocess.run(
            [sys.executable, "-m", "rerankd", "rerank", *where, "--json", CHINESE_QUERY,
             *CHINESE_DOCUMENTS],
            capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "rerankd: warning: model 'builtin' is English-only" in result.stderr
        assert MULTILINGUAL_FLAG in result.stderr
        assert len(json.loads(result.stdout)) == len(CHINESE_DOCUMENTS)


def test_the_start_up_log_names_the_playground_and_the_docs(builtin: ServerProcess) -> None:
    lines = [json.loads(line) for line in builtin.logs().splitlines() if line.startswith("{")]
    (found,) = [line for line in lines if line.get("logger") == "rerankd.server"]
    assert found["msg"] == (
        f"playground: {builtin.url}/ ; API reference: {builtin.url}/docs (and /redoc)"
    )
    assert found["playground"] == builtin.url + "/" and found["docs"] == builtin.url + "/docs"
    assert httpx.get(found["playground"], timeout=60, follow_redirects=True).status_code == 200
    assert httpx.get(found["docs"], timeout=60).status_code == 200
