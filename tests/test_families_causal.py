"""mxbai-rerank-v2, zerank-style and sentence-transformers LogitScore families equal their
references on the same tiny weights (torch ≤ 1e-5, ONNX ≤ 1e-4), without ties the reference
does not have.

References: the `mxbai-rerank` package (`MxbaiRerankV2.predict`), sentence-transformers'
`CrossEncoder.predict` on a model it saved with `LogitScore`, and the zerank model card's
template written out below.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rerankd import Reranker
from tests.test_families_reference import stress_pairs

MAX_LENGTH = 256
INSTRUCTION = "Given a question about fruit or phones, find the passages that answer it"


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    return stress_pairs()


def load(path: Path, **options: object) -> Reranker:
    return Reranker(path, max_length=MAX_LENGTH, threads=1, **options)  # type: ignore[arg-type]


def assert_no_new_ties(scores: np.ndarray, reference: np.ndarray) -> None:
    """Scores tie only where the reference's do."""
    assert len(np.unique(scores)) >= len(np.unique(reference))


# mxbai-rerank-v2 -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mxbai_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rerankd.devtools.synthetic_causal import build_mxbai_reranker

    return build_mxbai_reranker(tmp_path_factory.mktemp("mxbai") / "tiny-mxbai-rerank-base-v2")


def prepare_for_model(
    ids: list[int], pair_ids: list[int], *, truncation: str, max_length: int, **_: object
) -> dict[str, list[int]]:
    """transformers 4's `prepare_for_model` for the one call the package makes (a pair, no
    special tokens, `only_second` truncation from the right): transformers 5 removed the method,
    so the package cannot run unaided. Nothing else of the reference changes."""
    assert truncation == "only_second"
    overflow = len(ids) + len(pair_ids) - max_length
    if 0 < overflow < len(pair_ids):
        pair_ids = pair_ids[:-overflow]
    return {"input_ids": ids + pair_ids}


@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_mxbai_equals_the_mxbai_rerank_package(
    mxbai_model: Path, pairs: list[tuple[str, str]], instruction: str | None
) -> None:
    import torch
    from mxbai_rerank import MxbaiRerankV2

    package = MxbaiRerankV2(
        str(mxbai_model), device="cpu", torch_dtype=torch.float32, max_length=MAX_LENGTH
    )
    package.tokenizer.prepare_for_model = prepare_for_model  # type: ignore[attr-defined]
    queries, documents = [q for q, _ in pairs], [d for _, d in pairs]
    expected = np.concatenate(
        [
            package.predict(queries[i : i + 8], documents[i : i + 8], instruction=instruction)
            .numpy()
            .astype(np.float64)
            for i in range(0, len(pairs), 8)
        ]
    )
    normalized = package.normalize_scores(expected)

    reranker = load(mxbai_model)
    assert reranker.engine.family.name == "mxbai-rerank-v2"
    raw = reranker.score(pairs, raw=True, instruction=instruction)
    assert np.abs(raw - expected).max() < 1e-5
    assert np.abs(reranker.score(pairs, instruction=instruction) - normalized).max() < 1e-5
    assert np.std(expected) > 0.05, "the fixture model should spread its scores"
    assert_no_new_ties(raw, expected)
    onnx = load(mxbai_model, backend="onnx")
    assert np.abs(onnx.score(pairs, raw=True, instruction=instruction) - expected).max() < 1e-4


# zerank-style --------------------------------------------------------------------------------

ZERANK_SYSTEM = "<|im_start|>system\n{query}<|im_end|>\n<|im_start|>user\n{document}<|im_end|>\n"
ZERANK_ASSISTANT = "<|im_start|>assistant\n"


def zerank_card(path: Path, pairs: list[tuple[str, str]]) -> np.ndarray:
    """The zerank cards' scoring: chat(system=query, user=document) with the assistant turn
    opened, the "Yes" logit at the last token (batches of 8, left padding)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    yes = tokenizer.convert_tokens_to_ids("Yes")
    raw: list[float] = []
    for start in range(0, len(pairs), 8):
        texts = [
            ZERANK_SYSTEM.format(query=q, document=d) + ZERANK_ASSISTANT
            for q, d in pairs[start : start + 8]
        ]
        batch = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            raw += model(**batch).logits[:, -1, yes].tolist()
    return np.asarray(raw)


@pytest.fixture(scope="module")
def zerank_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rerankd.devtools.synthetic_causal import build_qwen3_causal

    root = tmp_path_factory.mktemp("zerank")
    return build_qwen3_causal(root / "tiny-zerank-2", answers=("Yes",))


def test_zerank_equals_the_card_template(zerank_model: Path, pairs: list[tuple[str, str]]) -> None:
    expected = zerank_card(zerank_model, pairs)
    reranker = Reranker(zerank_model, max_length=4096, threads=1)  # nothing is cut
    assert reranker.engine.family.name == "zerank"
    raw = reranker.score(pairs, raw=True)
    assert np.abs(raw - expected).max() < 1e-5
    probability = 1 / (1 + np.exp(-expected / 5.0))  # the cards' documented scale
    assert np.abs(reranker.score(pairs) - probability).max() < 1e-6
    assert np.std(expected) > 0.05
    assert_no_new_ties(raw, expected)
    onnx = Reranker(zerank_model, max_length=4096, threads=1, backend="onnx")
    assert np.abs(onnx.score(pairs, raw=True) - expected).max() < 1e-4


# sentence-transformers LogitScore ------------------------------------------------------------


@pytest.fixture(scope="module")
def st_logit_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A causal LM loaded by sentence-transformers' CrossEncoder (which adds LogitScore on
    "yes"/"no") and saved by it, in a directory whose name says nothing."""
    from sentence_transformers import CrossEncoder

    from rerankd.devtools.synthetic_causal import build_qwen3_causal

    root = tmp_path_factory.mktemp("st-logit")
    base = build_qwen3_causal(root / "base-lm")
    out = root / "my-finetune"
    CrossEncoder(str(base), max_length=MAX_LENGTH).save_pretrained(str(out))
    return out


def test_st_logit_score_model_is_recognised_and_scored_as_cross_encoder_predict(
    st_logit_model: Path, pairs: list[tuple[str, str]]
) -> None:
    import torch
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(st_logit_model), max_length=MAX_LENGTH)
    expected_raw = model.predict(pairs, batch_size=8, activation_fn=torch.nn.Identity())
    expected = model.predict(pairs, batch_size=8)
    reranker = load(st_logit_model)  # no family flag
    assert reranker.engine.family.name == "st-logit-score"
    raw = reranker.score(pairs, raw=True)
    assert np.abs(raw - expected_raw).max() < 1e-5
    assert np.abs(reranker.score(pairs) - expected).max() < 1e-5
    assert np.std(expected_raw) > 0.05
    assert_no_new_ties(raw, expected_raw)
    onnx = load(st_logit_model, backend="onnx")
    assert np.abs(onnx.score(pairs, raw=True) - expected_raw).max() < 1e-4
