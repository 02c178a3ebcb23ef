"""`rerankd rerank --endpoint URL`: the CLI ranks through `rerankd.Client` on a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import ServerProcess, free_port, run_server
from tests.test_cli import rerankd
from tests.test_clients import DOCUMENTS, MODEL, QUERY, assert_same_ranking, native_ranking

API_KEY = "cli-key"


@pytest.fixture(scope="module")
def server(bert_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--model", f"{bert_model}={MODEL}", "--api-keys", API_KEY]
    with run_server(args, log_dir=tmp_path_factory.mktemp("cli-endpoint")) as running:
        yield running


def test_rerank_on_an_endpoint_matches_the_native_route(server: ServerProcess) -> None:
    expected = native_ranking(server, headers={"X-API-Key": API_KEY})
    result = rerankd(
        "rerank", "--endpoint", server.url, "--json", "--top-n", "3", QUERY, *DOCUMENTS,
        env={"RERANKD_API_KEY": API_KEY},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert_same_ranking([(r["index"], r["score"]) for r in rows], expected[:3])
    assert [r["document"] for r in rows] == [DOCUMENTS[r["index"]] for r in rows]

    table = rerankd("rerank", "--endpoint", server.url, "--api-key", API_KEY, QUERY, *DOCUMENTS)
    assert table.returncode == 0, table.stderr
    assert f"{MODEL}: {QUERY}" in table.stdout


def test_endpoint_errors_are_the_servers_messages(server: ServerProcess) -> None:
    unknown = rerankd(
        "rerank", "--endpoint", server.url, "--api-key", API_KEY, "-m", "nope", QUERY, "doc"
    )
    assert unknown.returncode == 2 and "served models: 'tiny-bert'" in unknown.stderr

    no_key = rerankd("rerank", "--endpoint", server.url, QUERY, "doc")
    assert no_key.returncode == 2 and "rerankd:" in no_key.stderr

    gone = rerankd("rerank", "--endpoint", f"http://127.0.0.1:{free_port()}", QUERY, "doc")
    assert gone.returncode == 2 and "rerankd:" in gone.stderr and "Traceback" not in gone.stderr
