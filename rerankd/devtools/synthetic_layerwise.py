"""Tiny checkpoints laid out as bge's layerwise rerankers, with seeded random weights.

The files are what the published checkpoints hold: the custom architecture name and config
fields (`LayerWiseMiniCPMForCausalLM` / `CostWiseGemmaForCausalLM`, `start_layer`, ...), the
decoder's weights under `model.` and one 1-logit head per scored layer under
`lm_head.{i}.linear_head.weight`. They are written from transformers' Llama and Gemma2 bodies,
so building one runs no custom code; the tokenizer is the Gemma-style one of `synthetic_llm`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rerankd.devtools.synthetic_llm import GEMMA_SPECIALS, train_gemma_tokenizer


def _save(out: Path, body: Any, heads: int, config: dict[str, Any], seed: int) -> None:
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed + 1)
    state = {f"model.{k}": v.contiguous() for k, v in body.state_dict().items()}
    hidden = int(config["hidden_size"])
    for index in range(heads):
        row = torch.randn(1, hidden, generator=generator) * 2.0 / hidden**0.5
        state[f"lm_head.{index}.linear_head.weight"] = row
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2))


def _save_tokenizer(out: Path, tokenizer: Any, max_length: int) -> None:
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(  # untyped in transformers
        tokenizer_object=tokenizer,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    ).save_pretrained(str(out))


def _specials(tokenizer: Any) -> dict[str, int]:
    ids = {name: tokenizer.token_to_id(name) for name in GEMMA_SPECIALS}
    return {
        "pad_token_id": ids["<pad>"],
        "bos_token_id": ids["<bos>"],
        "eos_token_id": ids["<eos>"],
    }


def build_minicpm_layerwise(
    out: Path, *, seed: int = 0, layers: int = 4, start_layer: int = 2
) -> Path:
    """bge-reranker-v2-minicpm-layerwise's layout, tiny: MiniCPM scalings, heads from
    `start_layer` to the last layer ("simple" heads, one per layer)."""
    import torch
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(seed)
    tokenizer = train_gemma_tokenizer()
    shape = {
        "vocab_size": tokenizer.get_vocab_size(),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "rope_theta": 10000.0,
        "initializer_range": 0.2,
        **_specials(tokenizer),
    }
    body = LlamaModel(LlamaConfig(**shape))
    config = {
        **shape,
        "architectures": ["LayerWiseMiniCPMForCausalLM"],
        "model_type": "minicpm",
        "scale_emb": 12,
        "dim_model_base": 256,
        "scale_depth": 1.4,
        "start_layer": start_layer,
        "head_multi": True,
        "head_type": "simple",
        "rope_scaling": None,
        "tie_word_embeddings": False,
        "use_cache": False,
    }
    _save(out, body, layers + 1 - start_layer, config, seed)
    _save_tokenizer(out, tokenizer, shape["max_position_embeddings"])
    return out


def build_gemma2_lightweight(
    out: Path, *, seed: int = 0, layers: int = 4, start_layer: int = 2, layer_sep: int = 1
) -> Path:
    """bge-reranker-v2.5-gemma2-lightweight's layout, tiny: a Gemma2 body with one head per
    scored layer (`start_layer`, every `layer_sep`)."""
    import torch
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(seed)
    tokenizer = train_gemma_tokenizer()
    shape = {
        "vocab_size": tokenizer.get_vocab_size(),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 1024,
        "sliding_window": 4096,
        "query_pre_attn_scalar": 16,
        "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0,
        "hidden_activation": "gelu_pytorch_tanh",
        "initializer_range": 0.2,
        **_specials(tokenizer),
    }
    body = Gemma2Model(Gemma2Config(**shape))
    config = {
        **shape,
        "architectures": ["CostWiseGemmaForCausalLM"],
        "model_type": "cost_wise_gemma",
        "start_layer": start_layer,
        "layer_sep": layer_sep,
        "layer_wise": True,
        "tie_word_embeddings": False,
        "use_cache": False,
    }
    heads = len(range(start_layer, layers + 1, layer_sep))
    _save(out, body, heads, config, seed)
    _save_tokenizer(out, tokenizer, shape["max_position_embeddings"])
    return out
