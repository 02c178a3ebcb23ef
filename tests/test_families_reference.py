"""Each model family's scores equal its reference implementation on the same tiny model.

References: the Qwen3-Reranker model card's transformers code (written out below),
FlagEmbedding's `FlagLLMReranker` for bge-reranker-v2-gemma, sentence-transformers'
`CrossEncoder.predict` for decoder `ForSequenceClassification` and ModernBERT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rerankd import Reranker
from tests.texts import CHINESE, mixed_pairs

MAX_LENGTH = 256
INSTRUCTION = "Given a question about fruit or phones, find the passages that answer it"


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> None:
    """One torch thread for the references too: on a busy 2-core machine it is 10x faster."""
    import torch

    torch.set_num_threads(1)


def load(path: Path, **options: object) -> Reranker:
    return Reranker(path, max_length=MAX_LENGTH, threads=1, **options)  # type: ignore[arg-type]


def stress_pairs() -> list[tuple[str, str]]:
    """Very different lengths, documents past MAX_LENGTH, Chinese and English, emoji."""
    pairs = mixed_pairs(40, seed=11, max_words=300)
    pairs += [
        ("apple phone", "苹果手机 🙂 e\u0301 titanium " * 120),  # far past max_length
        ("北京", "北京是中华人民共和国的首都"),
        ("🚀 launch", "🚀🍎🙂"),
        (CHINESE[:6] + " capital", "Paris is the capital of France. " + CHINESE),
        ("a", "b"),
    ]
    return pairs


# The Qwen3-Reranker model card's code, with its batch loop -------------------------------

QWEN_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
QWEN_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def qwen3_model_card(
    path: Path, pairs: list[tuple[str, str]], instruction: str | None, batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """(logit_yes - logit_no, P(yes)) exactly as the model card computes them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    token_false_id = tokenizer.convert_tokens_to_ids("no")
    token_true_id = tokenizer.convert_tokens_to_ids("yes")
    prefix_tokens = tokenizer.encode(QWEN_PREFIX, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(QWEN_SUFFIX, add_special_tokens=False)

    def format_instruction(instruction: str | None, query: str, doc: str) -> str:
        if instruction is None:
            instruction = (
                "Given a web search query, retrieve relevant passages that answer the query"
            )
        return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"

    raw: list[float] = []
    probability: list[float] = []
    for start in range(0, len(pairs), batch_size):
        texts = [
            format_instruction(instruction, q, d) for q, d in pairs[start : start + batch_size]
        ]
        inputs = tokenizer(
            texts,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=MAX_LENGTH - len(prefix_tokens) - len(suffix_tokens),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
        inputs = tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=MAX_LENGTH)
        with torch.no_grad():
            batch_scores = model(**inputs).logits[:, -1, :]
        true_vector = batch_scores[:, token_true_id]
        false_vector = batch_scores[:, token_false_id]
        stacked = torch.stack([false_vector, true_vector], dim=1)
        log_probs = torch.nn.functional.log_softmax(stacked, dim=1)
        probability += log_probs[:, 1].exp().tolist()
        raw += (true_vector - false_vector).tolist()
    return np.array(raw), np.array(probability)


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    return stress_pairs()


@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_qwen3_reranker_equals_the_model_card(
    qwen3_reranker: Path, pairs: list[tuple[str, str]], instruction: str | None
) -> None:
    expected_raw, expected_p = qwen3_model_card(qwen3_reranker, pairs, instruction)
    reranker = load(qwen3_reranker)
    assert reranker.engine.family.name == "qwen3-reranker"
    raw = reranker.score(pairs, raw=True, instruction=instruction)
    assert np.abs(raw - expected_raw).max() < 1e-5
    assert np.abs(reranker.score(pairs, instruction=instruction) - expected_p).max() < 1e-5
    assert np.std(expected_p) > 0.01, "the fixture model should spread its scores"
    onnx = load(qwen3_reranker, backend="onnx")
    assert np.abs(onnx.score(pairs, raw=True, instruction=instruction) - expected_raw).max() < 1e-4


def test_the_instruction_changes_qwen3_scores(
    qwen3_reranker: Path, pairs: list[tuple[str, str]]
) -> None:
    reranker = load(qwen3_reranker)
    default = reranker.score(pairs[:8], raw=True)
    assert np.abs(reranker.score(pairs[:8], raw=True, instruction=INSTRUCTION) - default).min() > 0
    # The model's own default instruction (--instruction) replaces the family's.
    own = load(qwen3_reranker, instruction=INSTRUCTION)
    assert np.array_equal(
        own.score(pairs[:8], raw=True), reranker.score(pairs[:8], raw=True, instruction=INSTRUCTION)
    )


@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_bge_gemma_equals_flag_llm_reranker(
    gemma_reranker: Path, pairs: list[tuple[str, str]], instruction: str | None
) -> None:
    from FlagEmbedding import FlagLLMReranker

    reference = FlagLLMReranker(str(gemma_reranker), devices="cpu", batch_size=8)
    expected = np.array(reference.compute_score(pairs, max_length=MAX_LENGTH, prompt=instruction))
    normalized = np.array(
        reference.compute_score(pairs, max_length=MAX_LENGTH, prompt=instruction, normalize=True)
    )
    reranker = load(gemma_reranker)
    assert reranker.engine.family.name == "bge-reranker-gemma"
    assert np.abs(reranker.score(pairs, raw=True, instruction=instruction) - expected).max() < 1e-5
    assert np.abs(reranker.score(pairs, instruction=instruction) - normalized).max() < 1e-5
    assert np.std(normalized) > 0.01
    onnx = load(gemma_reranker, backend="onnx")
    assert np.abs(onnx.score(pairs, raw=True, instruction=instruction) - expected).max() < 1e-4


@pytest.mark.parametrize("fixture", ["qwen3_seq_cls", "modernbert_model"])
def test_decoder_seq_cls_and_modernbert_equal_cross_encoder_predict(
    fixture: str, pairs: list[tuple[str, str]], request: pytest.FixtureRequest
) -> None:
    import torch
    from sentence_transformers import CrossEncoder

    path: Path = request.getfixturevalue(fixture)
    reference = CrossEncoder(str(path), max_length=MAX_LENGTH)
    raw_reference = CrossEncoder(
        str(path), max_length=MAX_LENGTH, activation_fn=torch.nn.Identity()
    )
    reranker = load(path)
    assert reranker.engine.family.name == "cross-encoder"
    expected = raw_reference.predict(pairs, batch_size=8)
    assert np.abs(reranker.score(pairs, raw=True) - expected).max() < 1e-5
    assert np.abs(reranker.score(pairs) - reference.predict(pairs, batch_size=8)).max() < 1e-5
    assert np.std(expected) > 0.1
    onnx = load(path, backend="onnx")
    assert np.abs(onnx.score(pairs, raw=True) - expected).max() < 1e-4
