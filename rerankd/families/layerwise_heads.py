"""Torch heads of bge's layerwise rerankers, built from transformers' Llama and Gemma2 classes.

MiniCPM is Llama with three scalings: the embeddings times `scale_emb`, and each residual
branch times `scale_depth / sqrt(num_hidden_layers)`. The branch scaling is folded into the
output projections (`o_proj`, `down_proj`) once at load, so transformers' Llama layers run it
unchanged. CostWiseGemma is transformers' Gemma2 body with per-layer heads. The checkpoints'
per-layer heads (`lm_head.{i}.linear_head.weight`, one row each) are read from the weight files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from rerankd.families.heads import real_token_positions

if TYPE_CHECKING:
    from rerankd.models import ResolvedModel


def read_tensors(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors whose names start with `prefix` (safetensors, sharded or not,
    or a pytorch_model.bin read with weights_only)."""
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    found: dict[str, torch.Tensor] = {}
    if files:
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                    if key.startswith(prefix):
                        found[key] = handle.get_tensor(key)
        return found
    for file in sorted(path.glob("pytorch_model*.bin")):
        state = torch.load(str(file), map_location="cpu", weights_only=True)
        found.update({k: v for k, v in state.items() if k.startswith(prefix)})
    return found


def _heads(model: ResolvedModel, count: int, dtype: torch.dtype) -> torch.Tensor:
    """The per-layer 1-logit heads as one [count, hidden] matrix."""
    tensors = read_tensors(model.path, "lm_head.")
    rows = []
    for index in range(count):
        weight = tensors.get(f"lm_head.{index}.linear_head.weight")
        if weight is None or weight.shape[0] != 1:
            raise ValueError(f"{model.path}: no one-logit head lm_head.{index} in the weights")
        rows.append(weight[0])
    return torch.stack(rows).to(dtype)


def _config_without(config: dict[str, Any], *drop: str) -> dict[str, Any]:
    skip = {"architectures", "model_type", "auto_map", "transformers_version", "dtype", *drop}
    return {k: v for k, v in config.items() if k not in skip and not k.startswith("_")}


def causal_mask(mask: torch.Tensor, dtype: torch.dtype, window: int | None) -> torch.Tensor:
    """[batch, 1, seq, seq] additive mask: causal, padding keys hidden, and (for sliding
    layers) keys at most `window - 1` tokens back."""
    seq = mask.shape[1]
    positions = torch.arange(seq, device=mask.device)
    allowed = positions[None, :] <= positions[:, None]
    if window is not None:
        allowed = allowed & (positions[:, None] - positions[None, :] < window)
    allowed = allowed[None, :, :] & mask[:, None, :].bool()
    blocked = torch.zeros(allowed.shape, dtype=dtype, device=mask.device)
    blocked = blocked.masked_fill(~allowed, torch.finfo(dtype).min)
    return blocked[:, None, :, :]


def last_real(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's hidden state at its last real token (right padding)."""
    last = mask.sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class MiniCpmLayerwiseHead(nn.Module):
    """A MiniCPM decoder run to the cutoff layer, scored by that layer's head."""

    heads: torch.Tensor

    def __init__(self, body: Any, heads: torch.Tensor, start_layer: int, scale_emb: float) -> None:
        super().__init__()
        self.body = body
        self.register_buffer("heads", heads, persistent=False)
        self.start_layer = start_layer
        self.scale_emb = scale_emb

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cutoff_layer: torch.Tensor,
        **_: torch.Tensor,
    ) -> torch.Tensor:
        cutoff = int(cutoff_layer.reshape(-1)[0])
        hidden = self.body.embed_tokens(input_ids) * self.scale_emb
        positions = real_token_positions(attention_mask)
        rotary = self.body.rotary_emb(hidden, positions)
        mask = causal_mask(attention_mask, hidden.dtype, None)
        for layer in self.body.layers[:cutoff]:
            hidden = layer(
                hidden, attention_mask=mask, position_ids=positions, position_embeddings=rotary
            )
        final = last_real(self.body.norm(hidden), attention_mask)
        head = self.heads[cutoff - self.start_layer]
        score: torch.Tensor = (final @ head).float()
        return score


def minicpm_layerwise_head(
    model: ResolvedModel, dtype: torch.dtype, attention: str
) -> MiniCpmLayerwiseHead:
    from transformers import LlamaConfig, LlamaModel

    from rerankd.families.heads import load_pretrained

    raw = model.config
    layers = int(raw["num_hidden_layers"])
    if raw.get("head_type", "simple") != "simple" or not raw.get("head_multi", True):
        raise ValueError(f"{model.path}: only head_type 'simple' with head_multi is supported")
    config = LlamaConfig(
        **_config_without(
            raw,
            "scale_emb",
            "dim_model_base",
            "scale_depth",
            "start_layer",
            "head_multi",
            "head_type",
            "use_cache",
        )
    )
    config.tie_word_embeddings = False

    class _Loader:
        @staticmethod
        def from_pretrained(path: str, **kwargs: Any) -> Any:
            return LlamaModel.from_pretrained(path, config=config, **kwargs)

    body = load_pretrained(_Loader, model, dtype, attention)
    branch = float(raw.get("scale_depth", 1.0)) / math.sqrt(layers)
    with torch.no_grad():
        for layer in body.layers:
            layer.self_attn.o_proj.weight.mul_(branch)
            layer.mlp.down_proj.weight.mul_(branch)
    start = int(raw.get("start_layer", 8))
    heads = _heads(model, layers + 1 - start, dtype)
    return MiniCpmLayerwiseHead(body, heads, start, float(raw.get("scale_emb", 1.0)))


def compress_tokens(
    hidden: torch.Tensor,
    mask: torch.Tensor,
    query_lengths: torch.Tensor,
    prompt_lengths: torch.Tensor,
    ratio: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each run of `ratio` passage tokens becomes their mean (a last, shorter run: the mean of
    what it has); the query before and the prompt after are kept. Right-padded in and out."""
    lengths = mask.sum(dim=1)
    rows: list[torch.Tensor] = []
    for b in range(hidden.shape[0]):
        q, p = int(query_lengths[b]), int(prompt_lengths[b])
        total = int(lengths[b])
        passage = hidden[b, q : total - p]
        count = passage.shape[0]
        kept = (count + ratio - 1) // ratio
        padded = torch.zeros(
            kept * ratio, hidden.shape[-1], dtype=hidden.dtype, device=hidden.device
        )
        padded[:count] = passage
        weights = torch.zeros(kept * ratio, dtype=hidden.dtype, device=hidden.device)
        weights[:count] = 1
        weights = weights.view(kept, ratio)
        weights = (weights / weights.sum(dim=-1, keepdim=True)).view(-1)
        means = (padded * weights[:, None]).view(kept, ratio, -1).sum(dim=1)
        rows.append(torch.cat([hidden[b, :q], means, hidden[b, total - p : total]]))
    longest = max(r.shape[0] for r in rows)
    out = hidden.new_zeros(hidden.shape[0], longest, hidden.shape[-1])
    new_mask = torch.zeros(hidden.shape[0], longest, dtype=mask.dtype, device=mask.device)
    for b, row in enumerate(rows):
        out[b, : row.shape[0]] = row
        new_mask[b, : row.shape[0]] = 1
    return out, new_mask


class Gemma2LightweightHead(nn.Module):
    """A Gemma2 decoder run to the cutoff layer, compressing the passage before the chosen
    layers, scored by a head (soft-capped as the checkpoint's logits are)."""

    heads: torch.Tensor

    def __init__(self, body: Any, heads: torch.Tensor, config: Any) -> None:
        super().__init__()
        self.body = body
        self.register_buffer("heads", heads, persistent=False)
        self.layer_types = list(config.layer_types)
        self.window = int(config.sliding_window or 0) or None
        self.softcap = float(config.final_logit_softcapping or 0.0)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        query_lengths: torch.Tensor,
        prompt_lengths: torch.Tensor,
        cutoff_layer: torch.Tensor,
        compress_ratio: torch.Tensor,
        compress_layers: torch.Tensor,
    ) -> torch.Tensor:
        cutoff = int(cutoff_layer.reshape(-1)[0])
        ratio = int(compress_ratio.reshape(-1)[0])
        hidden = self.body.embed_tokens(input_ids)  # scaled by sqrt(hidden_size), as Gemma's
        mask = attention_mask
        for index, layer in enumerate(self.body.layers[:cutoff]):
            if index == 0 or (ratio > 1 and bool(compress_layers[index])):
                if index > 0:
                    hidden, mask = compress_tokens(
                        hidden, mask, query_lengths, prompt_lengths, ratio
                    )
                positions = real_token_positions(mask)
                rotary = self.body.rotary_emb(hidden, positions)
                masks = {
                    "full_attention": causal_mask(mask, hidden.dtype, None),
                    "sliding_attention": causal_mask(mask, hidden.dtype, self.window),
                }
            hidden = layer(
                hidden,
                attention_mask=masks[self.layer_types[index]],
                position_ids=positions,
                position_embeddings=rotary,
            )
        final = last_real(self.body.norm(hidden), mask)
        # FlagEmbedding reads head i for the i-th scored layer it returns: with one cutoff
        # layer, always the first head (CostWiseGemmaForCausalLM.forward).
        logit = (final @ self.heads[0]).float()
        if self.softcap:
            logit = torch.tanh(logit / self.softcap) * self.softcap
        return logit


def gemma2_lightweight_head(model: ResolvedModel, dtype: torch.dtype) -> Gemma2LightweightHead:
    from transformers import Gemma2Config, Gemma2Model

    from rerankd.families.heads import load_pretrained

    raw = model.config
    config = Gemma2Config(
        **_config_without(raw, "start_layer", "layer_sep", "layer_wise", "use_cache")
    )
    config.tie_word_embeddings = False

    class _Loader:
        @staticmethod
        def from_pretrained(path: str, **kwargs: Any) -> Any:
            return Gemma2Model.from_pretrained(path, config=config, **kwargs)

    # Eager attention: Gemma2 soft-caps its attention logits, which SDPA cannot.
    body = load_pretrained(_Loader, model, dtype, "eager")
    layers, start = config.num_hidden_layers, int(raw.get("start_layer", 28))
    count = len(range(start, layers + 1, int(raw.get("layer_sep", 28))))
    return Gemma2LightweightHead(body, _heads(model, count, dtype), config)
