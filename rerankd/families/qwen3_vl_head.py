"""The torch head of Qwen3-VL-Reranker: Qwen3-VL's body, then (yes − no) at the last token."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Qwen3VLYesNoHead(nn.Module):
    """(input_ids, attention_mask, pixel_values, image_grid_thw) -> raw score per sequence.

    The body is transformers' `Qwen3VLModel` (vision tower, deepstack, multimodal rotary
    positions from the attention mask, so left padding is handled). The score is the last
    real token's hidden state times the difference of the LM head's "yes" and "no" rows,
    computed in the model's dtype as the card's `score_linear`, returned as float32.
    """

    direction: torch.Tensor

    def __init__(self, model: Any, yes: int, no: int, image_token: int) -> None:
        super().__init__()
        self.body = model.model
        weight = model.lm_head.weight.detach()
        self.register_buffer("direction", (weight[yes] - weight[no]).clone(), persistent=False)
        self.image_token = image_token

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.Tensor,
    ) -> torch.Tensor:
        extra: dict[str, torch.Tensor] = {}
        if image_grid_thw.shape[0]:
            weights = self.direction
            extra = {
                "pixel_values": pixel_values.to(weights.dtype),
                "image_grid_thw": image_grid_thw,
                "mm_token_type_ids": (input_ids == self.image_token).long(),
            }
        hidden: torch.Tensor = self.body(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra
        ).last_hidden_state
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        last = (attention_mask * positions).argmax(dim=1)
        final = hidden[torch.arange(input_ids.shape[0], device=input_ids.device), last]
        score: torch.Tensor = (final @ self.direction).float()
        return score
