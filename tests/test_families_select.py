"""Choosing a model's family: detection, `--family`, and the errors when neither can tell."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from rerankd import InvalidInput
from rerankd.config import Settings
from rerankd.errors import UnsupportedModel
from rerankd.families import FAMILIES, resolve
from rerankd.models import ModelSpec
from tests.test_cli import rerankd
from tests.test_families_reference import load, one_thread  # noqa: F401


@pytest.mark.parametrize(
    ("fixture", "family"),
    [
        ("qwen3_reranker", "qwen3-reranker"),
        ("gemma_reranker", "bge-reranker-gemma"),
        ("qwen3_seq_cls", "cross-encoder"),
        ("modernbert_model", "cross-encoder"),
        ("bert_model", "cross-encoder"),
    ],
)
def test_each_model_is_recognised_by_its_family(
    fixture: str, family: str, request: pytest.FixtureRequest
) -> None:
    assert resolve(ModelSpec(str(request.getfixturevalue(fixture)))).family == family


def test_an_unknown_family_is_a_start_up_error_listing_the_families() -> None:
    with pytest.raises(ValidationError) as error:
        Settings(family="nope")
    assert all(name in str(error.value) for name in FAMILIES)
    result = rerankd("serve", "--family", "nope", "--port", "0")
    assert result.returncode != 0
    assert "nope" in result.stderr and all(name in result.stderr for name in FAMILIES)


def test_a_causal_lm_not_named_like_a_reranker_needs_its_family_named(
    qwen3_reranker: Path, tmp_path: Path
) -> None:
    chat = shutil.copytree(qwen3_reranker, tmp_path / "tiny-qwen3-chat")
    with pytest.raises(UnsupportedModel) as error:
        resolve(ModelSpec(str(chat)))
    assert "Qwen3ForCausalLM" in str(error.value) and "--family qwen3-reranker" in str(error.value)
    pairs = [("apple phone", "a titanium phone"), ("北京", "北京是中华人民共和国的首都")]
    named = load(chat, family="qwen3-reranker").score(pairs, raw=True)
    assert np.array_equal(named, load(qwen3_reranker).score(pairs, raw=True))


def test_a_yes_no_family_refuses_a_classifier(qwen3_seq_cls: Path) -> None:
    with pytest.raises(UnsupportedModel, match="cross-encoder family"):
        resolve(ModelSpec(str(qwen3_seq_cls), family="qwen3-reranker"))


def test_a_cross_encoder_refuses_an_instruction_naming_the_model(qwen3_seq_cls: Path) -> None:
    reranker = load(qwen3_seq_cls)
    assert not reranker.engine.takes_instruction
    with pytest.raises(InvalidInput, match="tiny-qwen3-reranker-seq-cls"):
        reranker.score([("a", "b")], instruction="find fruit")
