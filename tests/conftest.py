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
