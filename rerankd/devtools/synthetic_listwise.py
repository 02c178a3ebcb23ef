"""Build a jina-reranker-v3 of the real layout with seeded random weights.

The checkpoint is laid out as the published one: a `config.json` of model type qwen3 with
architecture `JinaForRanking`, one `model.safetensors` holding the Qwen3 body under `model.*`
and the projector under `projector.0.weight` / `projector.2.weight` (hidden -> hidden/2 ->
512, no bias, no LM head: the card replaces it), and a Qwen-style byte-level BPE tokenizer
trained here with `<|embed_token|>` and `<|rerank_token|>` as special tokens. The directory
name holds "jina-reranker-v3", as the real one's does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rerankd.devtools.synthetic_llm import _qwen3_config, train_qwen_tokenizer
from rerankd.families.jina_v3 import ASSISTANT, DOC_TOKEN, QUERY_TOKEN, SYSTEM

PROJECTOR_DIM = 512  # the card's projector_dim
_TEMPLATE = [
    SYSTEM + "I will provide you with 2 passages, each indicated by a numerical identifier. "
    "Rank the passages based on their relevance to query: capital of France\n<instruct>\n"
    'Find the answer\n</instruct>\n<passage id="0">\nParis is the capital.\n</passage>\n'
    "<query>\ncapital of France\n</query>" + ASSISTANT
]


def build_jina_reranker_v3(
    out: Path,
    *,
    seed: int = 0,
    tokenizer_corpus: list[str] | None = None,
    tokenizer_vocab: int = 1500,
    **shape: Any,
) -> Path:
    """A tiny (by default) jina-reranker-v3; `shape` overrides Qwen3 config fields."""
    import torch
    from safetensors.torch import save_file
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast, Qwen3Model

    torch.manual_seed(seed)
    tokenizer = train_qwen_tokenizer(tokenizer_vocab, _TEMPLATE * 8 + (tokenizer_corpus or []))
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in (DOC_TOKEN, QUERY_TOKEN)]
    )
    vocab = max(int(shape.pop("vocab_size", 0)), tokenizer.get_vocab_size())
    shape.setdefault("max_position_embeddings", 8192)
    config = _qwen3_config(
        vocab,
        bos_token_id=None,
        eos_token_id=tokenizer.token_to_id("<|im_end|>"),
        pad_token_id=tokenizer.token_to_id("<|endoftext|>"),
        **shape,
    )
    config.architectures = ["JinaForRanking"]
    config.auto_map = {"AutoModel": "modeling.JinaForRanking"}
    body = Qwen3Model(config)
    hidden = config.hidden_size
    generator = torch.Generator().manual_seed(seed + 1)
    tensors = {f"model.{k}": v.contiguous() for k, v in body.state_dict().items()}
    tensors["projector.0.weight"] = torch.randn(hidden // 2, hidden, generator=generator) * (
        1.0 / hidden**0.5
    )
    tensors["projector.2.weight"] = torch.randn(PROJECTOR_DIM, hidden // 2, generator=generator) * (
        (2.0 / hidden) ** 0.5
    )
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(str(out))
    PreTrainedTokenizerFast(  # untyped in transformers
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>", DOC_TOKEN, QUERY_TOKEN],
        model_max_length=config.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    ).save_pretrained(str(out))
    return out
