"""Torch modules that put the scoring head on a Hugging Face model.

The same module runs in the torch backend and is what gets exported to ONNX, so both
backends compute exactly the same function.
"""

from __future__ import annotations

import torch
from torch import nn


class CrossEncoderHead(nn.Module):
    """(input_ids, attention_mask[, token_type_ids]) -> the single relevance logit, float32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
        return logits[:, 0].float()


class MeanPoolHead(nn.Module):
    """Sentence-transformers style embedding: mean over real tokens, then L2-normalized."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra)[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled.float(), p=2.0, dim=1)
