"""Build decoder rerankers and ModernBERT of real architectures with seeded random weights.

Like `synthetic.py`, nothing comes from the hub: each model gets a tokenizer trained here in
the style of the real one, and both are saved with `save_pretrained`, so they load through
exactly the code a downloaded model does.

- Qwen3 (Qwen3-Reranker and its `-seq-cls` conversions): byte-level BPE with Qwen2's
  pre-tokenizer split regex, NFC, `<|endoftext|>` / `<|im_start|>` / `<|im_end|>` as special
  tokens, `<think>` / `</think>` as added tokens, and "yes" / "no" as single vocabulary
  entries (the rows Qwen3-Reranker reads).
- Gemma (bge-reranker-v2-gemma): SentencePiece-style BPE with no pre-tokenizer, spaces
  replaced by "▁", byte fallback, `<pad>` (0) / `<eos>` (1) / `<bos>` (2) / `<unk>` (3).
- ModernBERT: byte-level BPE with `[CLS] A [SEP] B [SEP]` pairs.

The directory names matter: a causal LM is recognised as a reranker only when its name says
so (`tiny-qwen3-reranker`, `tiny-bge-reranker-v2-gemma`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rerankd.devtools.synthetic import _CORPUS

# Qwen2's (and Qwen3's) pre-tokenizer split, as in its tokenizer.json.
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]

# Text the templates and prompts use, so the tiny vocabularies hold their words.
_TEMPLATE_TEXT = [
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n<Instruct>: Given a web search query, retrieve relevant passages that "
    "answer the query\n<Query>: what is the capital of France\n<Document>: Paris is the "
    "capital.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    "A: what is the capital of France\nB: Paris is the capital of France.\nGiven a query A and "
    "a passage B, determine whether the passage contains an answer to the query by providing a "
    "prediction of either 'Yes' or 'No'.",
]
# The answer words on their own, often enough that BPE learns each as one token.
_ANSWERS = ["yes", "no", "Yes", "No"]


def _corpus() -> list[str]:
    rotated = [" ".join(_CORPUS[i:] + _CORPUS[:i]) for i in range(len(_CORPUS))]
    return _CORPUS * 4 + rotated + _TEMPLATE_TEXT * 8 + _ANSWERS * 50


def train_qwen_tokenizer(vocab_size: int = 1500, extra_corpus: list[str] | None = None) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer` built the way Qwen2/Qwen3's is.

    `extra_corpus`: more training text (the benchmark's workload, so its words take about
    as many tokens as they would with the real 151k vocabulary).
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=QWEN_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus() + (extra_corpus or []), trainer=trainer)
    tokenizer.add_tokens(
        [AddedToken(t, special=False, normalized=False) for t in ("<think>", "</think>")]
    )
    for word in ("yes", "no"):
        if tokenizer.token_to_id(word) is None:  # pragma: no cover - the corpus ensures it
            raise RuntimeError(f"the trained vocabulary lacks a single {word!r} token")
    return tokenizer


def save_qwen_tokenizer(out: Path, tokenizer: Any, model_max_length: int) -> None:
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    ).save_pretrained(str(out))


def train_gemma_tokenizer(vocab_size: int = 1500) -> Any:
    """A SentencePiece-style BPE: no pre-tokenizer, "▁" for spaces, byte fallback."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=GEMMA_SPECIALS, show_progress=False
    )
    # No pre-tokenizer, as in Gemma: train on lines, so merges may cross "▁".
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    # Byte fallback needs the 256 <0xNN> pieces in the vocabulary itself (as Gemma has them).
    state = json.loads(tokenizer.to_str())
    vocab = state["model"]["vocab"]
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    state["model"].update(byte_fallback=True, fuse_unk=True)
    tokenizer = Tokenizer.from_str(json.dumps(state))
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    bos = tokenizer.token_to_id("<bos>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)]
    )
    if tokenizer.token_to_id("Yes") is None:  # pragma: no cover - the corpus ensures it
        raise RuntimeError("the trained vocabulary lacks a single 'Yes' token")
    return tokenizer


def train_modernbert_tokenizer(vocab_size: int = 1200) -> Any:
    """Byte-level BPE with ModernBERT's special tokens and `[CLS] A [SEP] B [SEP]` pairs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tokenizer


def _qwen3_config(vocab_size: int, **shape: Any) -> Any:
    from transformers import Qwen3Config

    defaults: dict[str, Any] = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 4096,
        "initializer_range": 0.2,
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-6,
    }
    defaults.update(shape)
    return Qwen3Config(vocab_size=vocab_size, **defaults)


def build_qwen3_reranker(
    out: Path,
    *,
    seed: int = 0,
    tokenizer_corpus: list[str] | None = None,
    tokenizer_vocab: int = 1500,
    **shape: Any,
) -> Path:
    """A Qwen3ForCausalLM shaped like Qwen3-Reranker (tied embeddings), tiny by default.

    `shape` overrides config fields (the benchmark builds the 0.6B shape). A config vocabulary
    larger than the tokenizer's is allowed, as in the real model (151,669 rows).
    """
    import torch
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(seed)
    tokenizer = train_qwen_tokenizer(tokenizer_vocab, tokenizer_corpus)
    vocab = max(int(shape.pop("vocab_size", 0)), tokenizer.get_vocab_size())
    config = _qwen3_config(
        vocab,
        bos_token_id=None,
        eos_token_id=tokenizer.token_to_id("<|im_end|>"),
        **shape,
    )
    model = Qwen3ForCausalLM(config)
    _spread_answer_rows(model, [tokenizer.token_to_id("yes"), tokenizer.token_to_id("no")], seed)
    model.save_pretrained(str(out))
    save_qwen_tokenizer(out, tokenizer, config.max_position_embeddings)
    return out


def build_qwen3_seq_cls(out: Path, *, seed: int = 0) -> Path:
    """A one-label Qwen3ForSequenceClassification (the `-seq-cls` conversion's shape)."""
    import torch
    from transformers import Qwen3ForSequenceClassification

    from rerankd.devtools.synthetic import _spread_head

    torch.manual_seed(seed)
    tokenizer = train_qwen_tokenizer()
    config = _qwen3_config(
        tokenizer.get_vocab_size(),
        num_labels=1,
        pad_token_id=tokenizer.token_to_id("<|endoftext|>"),
        eos_token_id=tokenizer.token_to_id("<|im_end|>"),
    )
    model = Qwen3ForSequenceClassification(config)
    _spread_head(model, seed, prefixes=("score",))
    model.save_pretrained(str(out))
    save_qwen_tokenizer(out, tokenizer, config.max_position_embeddings)
    return out


def build_gemma_reranker(out: Path, *, seed: int = 0) -> Path:
    """A GemmaForCausalLM shaped like bge-reranker-v2-gemma (tied embeddings), tiny."""
    import torch
    from transformers import GemmaConfig, GemmaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    tokenizer = train_gemma_tokenizer()
    ids = {name: tokenizer.token_to_id(name) for name in GEMMA_SPECIALS}
    config = GemmaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=2048,
        initializer_range=0.2,
        hidden_activation="gelu_pytorch_tanh",
        pad_token_id=ids["<pad>"],
        bos_token_id=ids["<bos>"],
        eos_token_id=ids["<eos>"],
        tie_word_embeddings=True,
    )
    model = GemmaForCausalLM(config)
    _spread_answer_rows(model, [tokenizer.token_to_id("Yes")], seed)
    model.save_pretrained(str(out))
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=config.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    ).save_pretrained(str(out))
    return out


def build_modernbert_cross_encoder(out: Path, *, seed: int = 0) -> Path:
    """A one-label ModernBertForSequenceClassification (no token type ids, rotary positions)."""
    import torch
    from transformers import (
        ModernBertConfig,
        ModernBertForSequenceClassification,
        PreTrainedTokenizerFast,
    )

    from rerankd.devtools.synthetic import _spread_head

    torch.manual_seed(seed)
    tokenizer = train_modernbert_tokenizer()
    ids = {t: tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]", "[MASK]")}
    config = ModernBertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        global_attn_every_n_layers=3,
        local_attention=64,
        max_position_embeddings=1024,
        initializer_range=0.2,
        pad_token_id=ids["[PAD]"],
        cls_token_id=ids["[CLS]"],
        sep_token_id=ids["[SEP]"],
        bos_token_id=ids["[CLS]"],
        eos_token_id=ids["[SEP]"],
        num_labels=1,
    )
    model = ModernBertForSequenceClassification(config)
    _spread_head(model, seed)
    model.save_pretrained(str(out))
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        unk_token="[UNK]",
        model_max_length=config.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    ).save_pretrained(str(out))
    return out


def _spread_answer_rows(model: Any, token_ids: list[int], seed: int) -> None:
    """Random LM heads give answer logits close together; widen the answer rows.

    The rows are shared with the input embeddings (tied, as in the real models), which only
    changes how the answer words embed when they appear in a text.
    """
    import torch

    generator = torch.Generator().manual_seed(seed + 2)
    weight = model.get_output_embeddings().weight
    with torch.no_grad():
        for token in token_ids:
            row = torch.randn(weight.shape[1], generator=generator)
            weight[token] = row * 2.0 / weight.shape[1] ** 0.5
