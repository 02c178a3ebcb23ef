"""Tiny causal rerankers of more real architectures: mxbai-rerank-v2 (Qwen2), zerank-style
(Qwen3 with its chat template), and a sentence-transformers CrossEncoder saved with LogitScore.

As in `synthetic_llm.py`, the weights are seeded random, the tokenizers are trained here in the
style of the real ones (Qwen's byte-level BPE), and everything is saved with `save_pretrained`
so it loads through the same code a downloaded model does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rerankd.devtools.synthetic_llm import (
    _qwen3_config,
    _spread_answer_rows,
    save_qwen_tokenizer,
    train_qwen_tokenizer,
)

# Text of the mxbai and zerank prompts, so the tiny vocabulary holds their words.
_PROMPTS = [
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n<|im_start|>user\ninstruction: find it\nquery: what is the capital of France\n"
    "document: Paris is the capital.\nYou are a search relevance expert who evaluates how well "
    "documents match search queries. For each query-document pair, carefully analyze the "
    "semantic relationship between them, then provide your binary relevance judgment (0 for "
    "not relevant, 1 for relevant).\nRelevance:<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nwhat is the capital of France<|im_end|>\n<|im_start|>user\nParis is "
    "the capital.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nYes",
]


def build_mxbai_reranker(out: Path, *, seed: int = 0, **shape: Any) -> Path:
    """A Qwen2ForCausalLM shaped like mxbai-rerank-base-v2 (tied embeddings), tiny."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    tokenizer = train_qwen_tokenizer(1500, _PROMPTS * 8)
    fields: dict[str, Any] = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        # 0.1, not synthetic_llm's 0.2: with the longer mxbai prompt, 0.2's activations make the
        # package's own scores move by 2e-5 with its batch's padding (its positions shift).
        "initializer_range": 0.1,
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-6,
        "use_sliding_window": False,
        "rope_theta": 1000000.0,  # the real models' (Qwen2.5)
    }
    fields.update(shape)
    config = Qwen2Config(
        vocab_size=tokenizer.get_vocab_size(),
        eos_token_id=tokenizer.token_to_id("<|im_end|>"),
        **fields,
    )
    model = Qwen2ForCausalLM(config)
    _spread_answer_rows(model, [tokenizer.token_to_id("1"), tokenizer.token_to_id("0")], seed)
    model.save_pretrained(str(out))
    save_qwen_tokenizer(out, tokenizer, config.max_position_embeddings)
    return out


def build_qwen3_causal(
    out: Path, *, seed: int = 0, answers: tuple[str, ...] = ("yes", "no")
) -> Path:
    """A Qwen3ForCausalLM with the Qwen3 chat template, its answer rows spread."""
    import torch
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(seed)
    tokenizer = train_qwen_tokenizer(1500, _PROMPTS * 8)
    config = _qwen3_config(
        tokenizer.get_vocab_size(),
        bos_token_id=None,
        eos_token_id=tokenizer.token_to_id("<|im_end|>"),
        initializer_range=0.1,  # as build_mxbai_reranker: the references' padding noise < 1e-5
    )
    model = Qwen3ForCausalLM(config)
    rows = [tokenizer.token_to_id(a) for a in answers]
    if None in rows:  # pragma: no cover - the corpus holds them
        raise RuntimeError(f"the trained vocabulary lacks one of {answers}")
    _spread_answer_rows(model, [int(r) for r in rows], seed)
    model.save_pretrained(str(out))
    save_qwen_tokenizer(out, tokenizer, config.max_position_embeddings)
    return out
