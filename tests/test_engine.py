"""The engine against the reference implementation, on models built by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from rerankd import InvalidInput, ModelNotFound, Reranker
from rerankd.engine import EngineOptions
from tests.texts import mixed_pairs

MAX_LENGTH = 128


@pytest.fixture(scope="module")
def references(xlmr_model: Path, bert_model: Path) -> dict[Path, object]:
    from sentence_transformers import CrossEncoder

    return {p: CrossEncoder(str(p), max_length=MAX_LENGTH) for p in (xlmr_model, bert_model)}


def test_torch_matches_cross_encoder_predict(cross_encoder: Path, references) -> None:
    pairs = mixed_pairs(48, seed=1)
    pairs += [("apple", "苹果手机 🙂 e\u0301" * 80), ("北京", "北京是中华人民共和国的首都")]
    expected = references[cross_encoder].predict(pairs, batch_size=16)
    got = Reranker(cross_encoder, max_length=MAX_LENGTH).score(pairs)
    assert np.abs(got - expected).max() < 1e-5
    assert np.std(got) > 0.01, "the fixture model should spread its scores"


def test_pairs_longer_than_max_length_are_cut_from_the_document(cross_encoder: Path) -> None:
    reranker = Reranker(cross_encoder, max_length=MAX_LENGTH)
    plan = reranker.engine.plan("a query", ["word " * 2000], reranker_policy())
    assert len(plan.sequences) == 1 and len(plan.sequences[0]) == MAX_LENGTH
    prefix = reranker.engine.plan("a query", ["word " * 400], reranker_policy()).sequences[0]
    assert plan.sequences[0].input_ids == prefix.input_ids


def test_long_query_is_capped_like_flag_embedding(cross_encoder: Path) -> None:
    reranker = Reranker(cross_encoder, max_length=MAX_LENGTH)
    plan = reranker.engine.plan("query " * 500, ["a short document"], reranker_policy())
    sequence = plan.sequences[0]
    assert len(sequence) <= MAX_LENGTH
    document_ids = reranker.engine.tokenizer.encode(["a short document"])[0]
    assert sequence.input_ids[-len(document_ids) - 1 : -1] == document_ids


def test_raw_scores_are_logits(bert_model: Path) -> None:
    reranker = Reranker(bert_model, max_length=MAX_LENGTH)
    pairs = mixed_pairs(8, seed=2)
    raw = reranker.score(pairs, raw=True)
    assert np.allclose(1 / (1 + np.exp(-raw)), reranker.score(pairs), atol=1e-7)


def test_batch_composition_never_changes_a_score(cross_encoder: Path) -> None:
    reranker = Reranker(cross_encoder, max_length=MAX_LENGTH, max_batch_tokens=64 * MAX_LENGTH)
    pairs = mixed_pairs(64, seed=3)
    together = reranker.score(pairs)
    alone = np.array([reranker.score([pair])[0] for pair in pairs])
    assert np.abs(together - alone).max() < 1e-5


def test_onnx_fp32_matches_torch_and_int8_keeps_order(cross_encoder: Path) -> None:
    pairs = mixed_pairs(300, seed=4, max_words=120)
    torch_scores = Reranker(cross_encoder, max_length=MAX_LENGTH).score(pairs, raw=True)
    onnx = Reranker(cross_encoder, backend="onnx", max_length=MAX_LENGTH)
    assert "onnxruntime" in onnx.engine.backend.description
    assert np.abs(onnx.score(pairs, raw=True) - torch_scores).max() < 1e-4
    int8 = Reranker(cross_encoder, backend="onnx", dtype="int8", max_length=MAX_LENGTH)
    rho = spearmanr(int8.score(pairs, raw=True), torch_scores).statistic
    assert rho >= 0.98, rho


def test_onnx_export_is_cached_by_weights_hash(bert_model: Path, tmp_path: Path) -> None:
    from rerankd.engine.onnx_backend import cache_entry
    from rerankd.families import resolve
    from rerankd.models import ModelSpec

    options = EngineOptions(backend="onnx", cache_dir=tmp_path)
    entry = cache_entry(resolve(ModelSpec(str(bert_model))), options)
    assert not entry.exists()
    Reranker(bert_model, backend="onnx", cache_dir=tmp_path)
    first = (entry / "model.onnx").stat().st_mtime_ns
    Reranker(bert_model, backend="onnx", cache_dir=tmp_path)
    assert (entry / "model.onnx").stat().st_mtime_ns == first


def test_onnx_export_is_keyed_by_config_json_too(bert_model: Path, tmp_path: Path) -> None:
    """Same weights, another config.json (a graph-changing field): a new export, not the old."""
    import json
    import shutil

    from rerankd.engine.onnx_backend import cache_entry
    from rerankd.families import resolve
    from rerankd.models import ModelSpec

    changed = tmp_path / "copy" / bert_model.name  # the same name: the same label
    shutil.copytree(bert_model, changed)
    config = json.loads((changed / "config.json").read_text())
    assert config["hidden_act"] != "relu"
    (changed / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    options = EngineOptions(backend="onnx", cache_dir=tmp_path / "cache")
    original, variant = resolve(ModelSpec(str(bert_model))), resolve(ModelSpec(str(changed)))
    assert original.revision == variant.revision  # the weights' hash alone cannot tell them apart
    assert cache_entry(original, options) != cache_entry(variant, options)

    pairs = [("capital of France", "Paris is in France"), ("apple", "a fruit")]
    before = Reranker(bert_model, backend="onnx", cache_dir=options.cache_dir)
    after = Reranker(changed, backend="onnx", cache_dir=options.cache_dir)
    assert (cache_entry(variant, options) / "model.onnx").is_file()
    expected = Reranker(changed, backend="torch").score(pairs, raw=True)
    assert np.abs(after.score(pairs, raw=True) - expected).max() < 1e-4
    assert np.abs(before.score(pairs, raw=True) - expected).max() > 1e-3  # relu tells


def test_builtin_model_ranks_relevant_passages_first() -> None:
    import json

    reranker = Reranker("builtin")
    data = Path(__file__).resolve().parent / "data" / "dev_eval.jsonl"
    reciprocal_ranks = []
    for line in data.read_text().splitlines():
        example = json.loads(line)
        order = [r.index for r in reranker.rerank(example["query"], example["documents"])]
        reciprocal_ranks.append(1 / (order.index(example["relevant"][0]) + 1))
    assert np.mean(reciprocal_ranks) == 1.0


def test_builtin_model_runs_on_onnx_too() -> None:
    torch_scores = Reranker("builtin").score([("capital of France", "Paris is in France")])
    onnx_scores = Reranker("builtin", backend="onnx").score(
        [("capital of France", "Paris is in France")]
    )
    assert abs(torch_scores[0] - onnx_scores[0]) < 1e-4


@pytest.mark.timeout(60)  # offline resolution must fail, never hang on the network
def test_unknown_hub_model_fails_fast_offline() -> None:
    with pytest.raises(ModelNotFound) as error:
        Reranker("no-such-org/no-such-reranker")
    message = str(error.value)
    assert "no-such-org/no-such-reranker" in message
    assert "HF_HUB_OFFLINE" in message and "local directory" in message


@pytest.mark.parametrize(
    ("query", "documents", "message"),
    [
        ("", ["doc"], "query is empty"),
        ("   ", ["doc"], "query is empty"),
        ("q", [], "documents is empty"),
        ("q", ["ok", "  \n"], "documents[1] is empty"),
        ("q", ["ok", 3], "documents[1] must be a string"),
        (None, ["doc"], "query must be a string"),
        ("q", "just a string", "documents must be a list"),
    ],
)
def test_bad_input_is_a_clear_value_error(bert_model: Path, query, documents, message: str) -> None:
    reranker = _cached_reranker(bert_model)
    with pytest.raises(InvalidInput, match=None) as error:
        reranker.rerank(query, documents)
    assert isinstance(error.value, ValueError)
    assert message in str(error.value)


def test_fp16_on_cpu_is_refused() -> None:
    with pytest.raises(ValueError, match="refused on CPU"):
        EngineOptions(dtype="fp16")
    with pytest.raises(ValueError, match="int8 is an ONNX Runtime mode"):
        EngineOptions(dtype="int8")


def test_top_n_and_order(bert_model: Path) -> None:
    reranker = _cached_reranker(bert_model)
    documents = [d for _, d in mixed_pairs(10, seed=5)]
    full = reranker.rerank("apple phone", documents)
    assert [r.score for r in full] == sorted((r.score for r in full), reverse=True)
    assert reranker.rerank("apple phone", documents, top_n=3) == full[:3]
    with pytest.raises(InvalidInput):
        reranker.rerank("apple phone", documents, top_n=0)


_RERANKERS: dict[Path, Reranker] = {}


def _cached_reranker(path: Path) -> Reranker:
    if path not in _RERANKERS:
        _RERANKERS[path] = Reranker(path, max_length=MAX_LENGTH)
    return _RERANKERS[path]


def reranker_policy():
    from rerankd.engine import LongDocPolicy

    return LongDocPolicy()
