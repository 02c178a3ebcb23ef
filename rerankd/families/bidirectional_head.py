"""Torch side of the nemotron-rerank family: a bidirectional decoder, pooled, one score row.

The body is transformers' own `LlamaModel` with `is_causal` off (transformers then builds a
bidirectional padding mask, and SDPA gets no causal flag); the checkpoint's `model.*` and
`score.weight` load through `LlamaForSequenceClassification`, whose layout they share. Nothing
of the checkpoint's `llama_bidirectional_model.py` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from rerankd.families.heads import real_token_positions

if TYPE_CHECKING:
    from rerankd.models import ResolvedModel

Pooling = Literal["avg", "last", "cls"]
# Fields of the checkpoint's config that are not LlamaConfig's (or that name its custom code).
_NOT_LLAMA = ("architectures", "auto_map", "model_type", "pooling", "temperature")


class BidirectionalScoreHead(nn.Module):
    """(input_ids, attention_mask), right-padded -> score(pool(hidden)) / temperature, float32."""

    def __init__(self, body: Any, score: nn.Linear, pooling: Pooling, temperature: float) -> None:
        super().__init__()
        self.body = body
        self.score = score
        self.pooling = pooling
        self.temperature = temperature

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden: torch.Tensor = self.body(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=real_token_positions(attention_mask),
            use_cache=False,
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "avg":
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
        elif self.pooling == "last":  # right padding: the last real token is at length - 1
            last = attention_mask.sum(dim=1) - 1
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        else:
            pooled = hidden[:, 0]
        logits: torch.Tensor = self.score(pooled) / self.temperature
        return logits[:, 0].float()


def load_bidirectional(
    model: ResolvedModel, pooling: Pooling, temperature: float, dtype: torch.dtype, attention: str
) -> BidirectionalScoreHead:
    """The checkpoint as transformers' Llama classes, made bidirectional."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    fields = {k: v for k, v in model.config.items() if k not in _NOT_LLAMA}
    config = LlamaConfig(**fields)
    config.is_causal = False
    config.use_cache = False
    classifier = LlamaForSequenceClassification.from_pretrained(
        str(model.path), config=config, dtype=dtype, attn_implementation=attention
    )
    body = classifier.model
    body.config.is_causal = False
    for layer in body.layers:
        layer.self_attn.is_causal = False
    return BidirectionalScoreHead(body, classifier.score, pooling, temperature).eval()
