"""Shared fixtures: tiny cross-encoders built locally and loaded through the real code."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# ONNX exports of the test models go to a fresh cache, never the user's.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="rerankd-test-cache-")
# Registrations persisted by servers without --data-dir go to a fresh directory too.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="rerankd-test-data-")
# Registrations may point only under --model-roots; the test models are built under the
# system temp directory. Tests of the roots themselves pass their own --model-roots.
os.environ.setdefault("RERANKD_MODEL_ROOTS", tempfile.gettempdir())
# The server's default backend is "auto", which exports and times each model once; test
# servers run torch unless a test asks otherwise (tests/test_backend_choice.py covers auto,
# and the README test's fresh shells run the default).
os.environ["RERANKD_BACKEND"] = "torch"


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def xlmr_model(model_root: Path) -> Path:
    from rerankd.devtools.synthetic import build_xlmr_cross_encoder

    return build_xlmr_cross_encoder(model_root / "tiny-xlmr")


@pytest.fixture(scope="session")
def bert_model(model_root: Path) -> Path:
    from rerankd.devtools.synthetic import build_bert_cross_encoder

    return build_bert_cross_encoder(model_root / "tiny-bert")


@pytest.fixture(params=["xlmr", "bert"])
def cross_encoder(request: pytest.FixtureRequest, xlmr_model: Path, bert_model: Path) -> Path:
    return xlmr_model if request.param == "xlmr" else bert_model


# Decoder rerankers and ModernBERT (tests/test_families*.py). Causal LMs are recognised as
# rerankers by name, so the directory names say "reranker".
@pytest.fixture(scope="session")
def qwen3_reranker(model_root: Path) -> Path:
    from rerankd.devtools.synthetic_llm import build_qwen3_reranker

    return build_qwen3_reranker(model_root / "tiny-qwen3-reranker")


@pytest.fixture(scope="session")
def gemma_reranker(model_root: Path) -> Path:
    from rerankd.devtools.synthetic_llm import build_gemma_reranker

    return build_gemma_reranker(model_root / "tiny-bge-reranker-v2-gemma")


@pytest.fixture(scope="session")
def qwen3_seq_cls(model_root: Path) -> Path:
    from rerankd.devtools.synthetic_llm import build_qwen3_seq_cls

    return build_qwen3_seq_cls(model_root / "tiny-qwen3-reranker-seq-cls")


@pytest.fixture(scope="session")
def modernbert_model(model_root: Path) -> Path:
    from rerankd.devtools.synthetic_llm import build_modernbert_cross_encoder

    return build_modernbert_cross_encoder(model_root / "tiny-modernbert")


# Late interaction (tests/test_colbert*.py, the README's ColBERT example): PyLate's format.
@pytest.fixture(scope="session")
def colbert_model(model_root: Path) -> Path:
    from rerankd.devtools.synthetic_colbert import build_colbert

    return build_colbert(model_root / "tiny-colbert")


@pytest.fixture(scope="session")
def jina_reranker_v3(model_root: Path) -> Path:
    """A tiny listwise jina-reranker-v3 (its name, as the real one's, says what it is)."""
    from rerankd.devtools.synthetic_listwise import build_jina_reranker_v3

    return build_jina_reranker_v3(model_root / "tiny-jina-reranker-v3")


from collections.abc import Iterator  # noqa: E402 (kept with the fixtures below: merges)

from tests.server import ServerProcess, run_server  # noqa: E402

if TYPE_CHECKING:
    from tests.test_redis import RedisServer


# Servers shared across test files (issue 25: a server start costs seconds, most of the suite's
# time). Only for tests that leave the server as they found it, or that change it under names
# and bodies no other test uses; tests that need a pristine or a differently started server
# start their own.
@pytest.fixture(scope="session")
def shared_builtin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The built-in model, long documents allowed 128 chunks (tests/test_serving.py's chunking
    test; the playground's tests do not depend on it)."""
    args = ["--model", "builtin", "--max-chunks-per-doc", "128"]
    with run_server(args, log_dir=tmp_path_factory.mktemp("shared-builtin")) as server:
        yield server


@pytest.fixture(scope="session")
def shared_bert_server(
    bert_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The tiny BERT as "tiny-bert", at most 20 documents a request (tests/test_client.py's
    413 test; tests/test_clients.py sends fewer)."""
    args = ["--model", f"{bert_model}=tiny-bert", "--max-documents", "20"]
    with run_server(args, log_dir=tmp_path_factory.mktemp("shared-bert")) as server:
        yield server


@pytest.fixture(scope="session")
def shared_xlmr_server(
    xlmr_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The tiny XLM-R with no cache (every request runs the model) and an 8192-token batch
    budget filled for up to 5 ms (tests/test_serving.py's batching tests)."""
    args = [
        "--model", str(xlmr_model), "--cache-entries", "0",
        "--max-batch-tokens", "8192", "--batch-wait-ms", "5",
    ]  # fmt: skip
    with run_server(args, log_dir=tmp_path_factory.mktemp("shared-xlmr")) as server:
        yield server


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One Redis server for the test module that asks for it (its tests flush what they need)."""
    from tests.test_redis import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Start this worker's warm interpreter for test servers (tests/zygote.py) now, so its
    imports overlap the first tests. `TESTS_NO_ZYGOTE=1` starts every server the ordinary way."""
    from tests.server import start_zygote

    if hasattr(session.config, "workerinput") or not session.config.getoption("numprocesses"):
        start_zygote()  # in each xdist worker, or in the one process of `-n0`; not the controller
