"""Shared fixtures: tiny cross-encoders built locally and loaded through the real code."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# ONNX exports of the test models go to a fresh cache, never the user's.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="rerankd-test-cache-")
# Registrations persisted by servers without --data-dir go to a fresh directory too.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="rerankd-test-data-")


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
