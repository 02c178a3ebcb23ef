"""The key/value caches of shared prefixes, for a decoder body (torch only; see prefix.py).

A prefix's cache is computed with batch 1 at positions 0..P-1, kept (least recently used
first out) while the kept caches fit `budget_bytes`, and expanded (a view) over the batch of
rests that follow it. Each run builds a fresh `DynamicCache` around the kept tensors, so a
run never appends to what is kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]
DEFAULT_BUDGET_BYTES = 256 * 1024 * 1024


class PrefixCaches:
    """Prefix ids -> per-layer (keys, values), bounded in bytes."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self._kept: OrderedDict[bytes, tuple[KV, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.computed_tokens = 0  # prefix tokens run to fill the caches
        self.hits = 0

    def get(self, body: Any, prefix_ids: torch.Tensor) -> KV:
        key = prefix_ids.cpu().numpy().tobytes()
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
                self.hits += 1
                return found[0]
        kv = _compute(body, prefix_ids)
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        with self._lock:
            self.computed_tokens += int(prefix_ids.shape[1])
            if size <= self.budget_bytes and key not in self._kept:
                self._kept[key] = (kv, size)
                self._bytes += size
                while self._bytes > self.budget_bytes:
                    _, (_, dropped) = self._kept.popitem(last=False)
                    self._bytes -= dropped
        return kv

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()
            self._bytes = 0


def _compute(body: Any, prefix_ids: torch.Tensor) -> KV:
    positions = torch.arange(prefix_ids.shape[1], device=prefix_ids.device)[None]
    output = body(
        input_ids=prefix_ids,
        attention_mask=torch.ones_like(prefix_ids),
        position_ids=positions,
        use_cache=True,
    )
    # transformers 5 names it `cache` (reading `past_key_values` logs a deprecation); 4.x
    # outputs have only `past_key_values`.
    cache = getattr(output, "cache", None)
    if cache is None:
        cache = output.past_key_values
    return [(layer.keys, layer.values) for layer in cache.layers]


def run_after_prefix(
    body: Any, kv: KV, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """The body's last hidden state over the rests (right-padded), after the kept prefix."""
    from transformers import DynamicCache

    batch, length = input_ids.shape
    prefix_length = int(kv[0][0].shape[2])
    cache = DynamicCache(config=body.config)
    for layer, (keys, values) in enumerate(kv):
        cache.update(keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1), layer)
    ones = torch.ones(batch, prefix_length, dtype=attention_mask.dtype, device=input_ids.device)
    full_mask = torch.cat([ones, attention_mask], dim=1)
    positions = prefix_length + torch.arange(length, device=input_ids.device)[None].expand(
        batch, -1
    )
    hidden: torch.Tensor = body(
        input_ids=input_ids,
        attention_mask=full_mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
    ).last_hidden_state
    return hidden


def shareable(config: Any) -> bool:
    """Whether every attention layer is full (a sliding window would crop the kept prefix)."""
    layer_types = getattr(config, "layer_types", None) or []
    return not getattr(config, "use_sliding_window", False) and all(
        t == "full_attention" for t in layer_types
    )
