"""nemotron-rerank-style rerankers (llama-nemotron-rerank-1b-v2) equal the model card's code on
the same tiny weights: torch ≤ 1e-5, ONNX ≤ 1e-4, no ties the card does not have; the family is
recognised from the config alone, and a pooling rerankd does not implement is refused.

The reference below is the card's published code written out: its prompt template, the
tokenizer called on whole prompts (padding, truncation at max_length), and its
`LlamaBidirectionalForSequenceClassification` forward — a Llama body with a bidirectional
padding mask, the last hidden state pooled over real tokens ("avg") or at the last one
("last"), a bias-free `score` Linear, the logit divided by `temperature`. Its mask is built
here as a 4D additive mask for eager attention, not through rerankd's path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rerankd import Reranker
from rerankd.errors import UnsupportedModel
from tests.test_families_reference import stress_pairs

MAX_LENGTH = 256
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>"]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def build_nemotron(out: Path, pooling: str, temperature: float, seed: int = 0) -> Path:
    """A tiny checkpoint laid out as llama-nemotron-rerank-1b-v2's: a Llama 3 style tokenizer
    (byte-level BPE, Llama 3's split, BOS added), the custom architecture name and config
    fields, weights under `model.` and `score.weight`."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    from rerankd.devtools.synthetic_llm import QWEN_SPLIT  # Llama 3's split, digits aside

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [text for pair in stress_pairs() for text in pair] * 2
    corpus += ["question: passage: \n \n "] * 20
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    bos = tokenizer.token_to_id(SPECIALS[0])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{SPECIALS[0]} $A", pair=f"{SPECIALS[0]} $A $B", special_tokens=[(SPECIALS[0], bos)]
    )
    PreTrainedTokenizerFast(  # untyped in transformers
        tokenizer_object=tokenizer,
        bos_token=SPECIALS[0],
        eos_token=SPECIALS[1],
        pad_token=SPECIALS[2],
        model_max_length=8192,
        clean_up_tokenization_spaces=False,
    ).save_pretrained(str(out))

    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        rope_theta=500000.0,
        num_labels=1,
        bos_token_id=bos,
        eos_token_id=tokenizer.token_to_id(SPECIALS[1]),
        pad_token_id=tokenizer.token_to_id(SPECIALS[2]),
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 2.0 / 64**0.5)
    model.save_pretrained(str(out))
    saved = json.loads((out / "config.json").read_text())
    saved.update(
        architectures=["LlamaBidirectionalForSequenceClassification"],
        model_type="llama_bidirec",
        auto_map={
            "AutoConfig": "llama_bidirectional_model.LlamaBidirectionalConfig",
            "AutoModelForSequenceClassification": (
                "llama_bidirectional_model.LlamaBidirectionalForSequenceClassification"
            ),
        },
        pooling=pooling,
        temperature=temperature,
    )
    (out / "config.json").write_text(json.dumps(saved, indent=2))
    return out


def card_scores(path: Path, pairs: list[tuple[str, str]], batch_size: int = 8) -> np.ndarray:
    """The card's usage code, with its model class's forward written out."""
    import torch
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    saved = json.loads((path / "config.json").read_text())
    fields = {k: v for k, v in saved.items() if k not in ("model_type", "auto_map")}
    config = LlamaConfig(**fields)
    config._attn_implementation = "eager"
    body = LlamaModel.from_pretrained(str(path), config=config).eval()
    from safetensors.torch import load_file

    weight = load_file(str(path / "model.safetensors"))["score.weight"]
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
    texts = [f"question:{query} \n \n passage:{passage}" for query, passage in pairs]
    scores: list[float] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=MAX_LENGTH,
            return_tensors="pt",
        )
        mask = batch["attention_mask"]
        # Bidirectional: every query position sees every real key, none sees padding.
        blocked = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        four_d = blocked.expand(-1, 1, mask.shape[1], -1)
        with torch.no_grad():
            hidden = body(input_ids=batch["input_ids"], attention_mask=four_d).last_hidden_state
        hidden = hidden.masked_fill(~mask[..., None].bool(), 0.0)
        if saved["pooling"] == "avg":
            pooled = hidden.sum(dim=1) / mask.sum(dim=1)[..., None]
        else:
            pooled = hidden[torch.arange(hidden.shape[0]), mask.sum(dim=1) - 1]
        logits = pooled @ weight.T / saved["temperature"]
        scores += logits[:, 0].tolist()
    return np.asarray(scores)


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The pooling variants: the same weights, told apart by config.json alone, so the ONNX
    export cache must key them by config.json too (the weights' hash is the same)."""
    from rerankd.models import weights_hash

    # A directory name that says nothing: the family is recognised from the config.
    built = {
        pooling: build_nemotron(tmp_path_factory.mktemp("nemotron") / "ckpt", pooling, temp)
        for pooling, temp in [("avg", 1.0), ("last", 2.0)]
    }
    assert len({weights_hash(path) for path in built.values()}) == 1
    return built


@pytest.fixture(params=["avg", "last"])
def nemotron(request: pytest.FixtureRequest, variants: dict[str, Path]) -> Path:
    return variants[request.param]


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_nemotron_equals_the_model_card(nemotron: Path, backend: str) -> None:
    pairs = stress_pairs()
    reference = card_scores(nemotron, pairs)
    reranker = Reranker(nemotron, max_length=MAX_LENGTH, threads=1, backend=backend)  # type: ignore[arg-type]
    assert reranker.engine.family.name == "nemotron-rerank"
    scores = reranker.score(pairs, raw=True)
    bound = 1e-5 if backend == "torch" else 1e-4
    assert np.abs(scores - reference).max() < bound
    assert len(np.unique(scores)) >= len(np.unique(reference))
    assert np.std(reference) > 0.05  # the weights separate the pairs: a real comparison
    relevance = reranker.score(pairs[:3])
    expected = 1.0 / (1.0 + np.exp(-reference[:3]))
    assert np.abs(relevance - expected).max() < bound


def test_an_unimplemented_pooling_is_refused(tmp_path: Path) -> None:
    path = build_nemotron(tmp_path / "ckpt", "weighted_avg", 1.0)
    with pytest.raises(UnsupportedModel, match="weighted_avg"):
        Reranker(path, max_length=MAX_LENGTH, threads=1)
