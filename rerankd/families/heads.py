"""Torch modules that put each family's scoring head on a Hugging Face model.

The same module runs in the torch backend and is what gets exported to ONNX, so both
backends compute exactly the same function. Every head takes the padded batch's tensors and
returns one float32 row per sequence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from rerankd.models import ResolvedModel


def load_pretrained(loader: Any, model: ResolvedModel, dtype: torch.dtype, attention: str) -> Any:
    """`loader.from_pretrained` with the dtype and attention implementation asked for."""
    try:
        loaded = loader.from_pretrained(str(model.path), dtype=dtype, attn_implementation=attention)
    except TypeError:  # transformers < 4.56 names it torch_dtype
        loaded = loader.from_pretrained(
            str(model.path), torch_dtype=dtype, attn_implementation=attention
        )
    # A reranker reads each sequence once: a decoder's key/value cache is only memory (and,
    # in the ONNX export, a traced cache object).
    if hasattr(loaded.config, "use_cache"):
        loaded.config.use_cache = False
    return loaded


def real_token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count each sequence's real tokens from 0, on either padding side.

    Given to rotary decoders, they make a sequence's score independent of how much padding
    its batch mates add in front of it (transformers counts positions from the first column).
    """
    return (attention_mask.cumsum(dim=1) - 1).clamp(min=0)


class SingleLogitHead(nn.Module):
    """(input_ids, attention_mask[, token_type_ids]) -> the single relevance logit, float32.

    `decoder`: pass real-token positions (see `real_token_positions`); encoders keep their
    own position scheme (XLM-R counts from its padding index).
    """

    def __init__(self, model: nn.Module, decoder: bool = False) -> None:
        super().__init__()
        self.model = model
        self.decoder = decoder

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        if self.decoder:
            extra["position_ids"] = real_token_positions(attention_mask)
        logits: torch.Tensor = self.model(
            input_ids=input_ids, attention_mask=attention_mask, **extra
        ).logits
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


class TokenLogitHead(nn.Module):
    """A causal LM read as a classifier: a few rows of its LM head at the last real token.

    The decoder runs to its last hidden state; only the last real token of each sequence
    (found from the attention mask, so left and right padding agree) is projected, and only on
    the rows of the tokens that matter. The raw score is `sum(coefficients * logits)`: with
    rows (yes, no) and coefficients (1, -1) it is logit_yes - logit_no, whose sigmoid is the
    softmax probability of "yes" over the pair. The vocabulary-sized logits are never made.
    """

    rows: torch.Tensor
    row_bias: torch.Tensor
    coefficients: torch.Tensor

    def __init__(self, causal_lm: Any, token_ids: list[int], coefficients: list[float]) -> None:
        super().__init__()
        self.body = causal_lm.get_decoder()
        lm_head = causal_lm.get_output_embeddings()
        rows = torch.tensor(token_ids, dtype=torch.long)
        weight = lm_head.weight.detach()[rows].clone()
        self.register_buffer("rows", weight, persistent=False)
        bias = getattr(lm_head, "bias", None)
        self.register_buffer(
            "row_bias",
            torch.zeros(len(token_ids), dtype=weight.dtype)
            if bias is None
            else bias.detach()[rows].clone(),
            persistent=False,
        )
        self.register_buffer(
            "coefficients", torch.tensor(coefficients, dtype=torch.float32), persistent=False
        )
        config = causal_lm.config
        self.softcap = float(getattr(config, "final_logit_softcapping", None) or 0.0)
        self.logit_scale = float(getattr(config, "logit_scale", None) or 1.0)
        from rerankd.families.prefix_cache import PrefixCaches, shareable

        self.shares_prefix = shareable(config)
        self.prefix_caches = PrefixCaches()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prefix_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`prefix_ids` ([1, P]): the rows are what follows that shared prefix, right-padded
        (rerankd/families/prefix.py); its key/value cache is computed once and kept."""
        if prefix_ids is not None:
            from rerankd.families.prefix_cache import run_after_prefix

            kv = self.prefix_caches.get(self.body, prefix_ids)
            hidden = run_after_prefix(self.body, kv, input_ids, attention_mask)
        else:
            hidden = self.body(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=real_token_positions(attention_mask),
                use_cache=False,
            ).last_hidden_state
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        last = (attention_mask * positions).argmax(dim=1)
        batch = torch.arange(input_ids.shape[0], device=input_ids.device)
        # The answer rows are projected in float32 whatever the body's dtype: a bf16 logit
        # keeps 8 bits of mantissa, and close documents would tie.
        final = hidden[batch, last].float()  # [batch, hidden]
        logits = (final @ self.rows.float().t() + self.row_bias.float()) * self.logit_scale
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        score: torch.Tensor = (logits * self.coefficients).sum(dim=1)
        return score


class DualTowerHead(nn.Module):
    """CLIP / SigLIP: token ids -> the text tower's features, or pixel values -> the image
    tower's, L2-normalised, float32 (transformers' `get_text_features` / `get_image_features`).

    `text_mask=False` leaves the attention mask out, as SigLIP's reference does (its texts are
    padded to the full length and pooled at the last position).
    """

    def __init__(self, model: nn.Module, text_mask: bool) -> None:
        super().__init__()
        self.model: Any = model  # CLIPModel or SiglipModel: their feature methods
        self.text_mask = text_mask

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if pixel_values is not None:
            weights = next(self.model.parameters())  # fp16/bf16 towers take pixels in their dtype
            features = self.model.get_image_features(pixel_values=pixel_values.to(weights.dtype))
        else:
            mask = attention_mask if self.text_mask else None
            features = self.model.get_text_features(input_ids=input_ids, attention_mask=mask)
        pooled = getattr(features, "pooler_output", features)  # transformers 5 returns outputs
        embedding: torch.Tensor = nn.functional.normalize(pooled.float(), p=2.0, dim=-1)
        return embedding


def load_dense(path: Path, dtype: torch.dtype) -> nn.Linear:
    """A sentence-transformers / PyLate `Dense` module's linear layer (PyLate runs it without
    its activation function)."""
    from safetensors.torch import load_file

    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    linear = nn.Linear(
        int(config["in_features"]), int(config["out_features"]), bias=bool(config.get("bias", True))
    )
    weights = path / "model.safetensors"
    state = (
        load_file(str(weights))
        if weights.is_file()
        else torch.load(str(path / "pytorch_model.bin"), map_location="cpu", weights_only=True)
    )
    linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
    return linear.to(dtype)


class TokenVectorsHead(nn.Module):
    """Late interaction (ColBERT): every position's last hidden state through the projections,
    L2-normalised, float32 [batch, length, dim]. Padding positions are cut off by the family."""

    def __init__(self, model: nn.Module, denses: list[nn.Linear]) -> None:
        super().__init__()
        self.model = model
        self.denses = nn.ModuleList(denses)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra)[0]
        for dense in self.denses:
            hidden = dense(hidden)
        return nn.functional.normalize(hidden, p=2.0, dim=-1).float()


class ListwiseHead(nn.Module):
    """A decoder read at marker tokens: (input_ids, attention_mask) -> [batch, 1 + slots, dim].

    Row 0 of each block is the projected last hidden state at the query marker, rows 1..n at
    the passage markers in order (the rest zero), float32: a fixed shape, so blocks of one
    request cut into different batches still stack. The markers are picked with a one-hot
    product (exact: one term per slot) so the graph exports to ONNX without dynamic shapes.
    """

    def __init__(
        self, body: nn.Module, projector: nn.Module, doc_id: int, query_id: int, slots: int
    ) -> None:
        super().__init__()
        self.body = body
        self.projector = projector
        self.doc_id = doc_id
        self.query_id = query_id
        self.slots = slots

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden: torch.Tensor = self.body(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=real_token_positions(attention_mask),
            use_cache=False,
        ).last_hidden_state
        is_doc = input_ids == self.doc_id
        slot = torch.where(is_doc, is_doc.long().cumsum(dim=1), torch.full_like(input_ids, -1))
        slot = torch.where(input_ids == self.query_id, torch.zeros_like(slot), slot)
        wanted = torch.arange(self.slots + 1, device=input_ids.device)
        one_hot = (slot.unsqueeze(-1) == wanted).to(hidden.dtype)  # [batch, seq, 1 + slots]
        real = attention_mask.unsqueeze(-1) > 0
        hidden = torch.where(real, hidden, torch.zeros_like(hidden))
        picked = one_hot.transpose(1, 2) @ hidden  # [batch, 1 + slots, hidden]
        projected: torch.Tensor = self.projector(picked)
        return projected.float()


def load_listwise_head(
    model: ResolvedModel, dtype: torch.dtype, attention: str, doc_id: int, query_id: int, slots: int
) -> ListwiseHead:
    """The Qwen3 body and the checkpoint's `projector.*` MLP (Linear, ReLU, Linear; no bias)."""
    from transformers import Qwen3Model

    body = load_pretrained(Qwen3Model, model, dtype, attention)
    weights = _checkpoint_tensors(model, ("projector.0.weight", "projector.2.weight"))
    first, second = weights["projector.0.weight"], weights["projector.2.weight"]
    down = nn.Linear(first.shape[1], first.shape[0], bias=False)
    out = nn.Linear(second.shape[1], second.shape[0], bias=False)
    with torch.no_grad():
        down.weight.copy_(first)
        out.weight.copy_(second)
    projector = nn.Sequential(down, nn.ReLU(), out)
    return ListwiseHead(body, projector.to(dtype), doc_id, query_id, slots).eval()


def _checkpoint_tensors(model: ResolvedModel, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Named tensors from the model's safetensors files (one file, or an indexed shard set)."""
    import json

    from safetensors import safe_open

    index = model.path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = {name: model.path / weight_map[name] for name in names if name in weight_map}
    else:
        files = {name: model.path / "model.safetensors" for name in names}
    found: dict[str, torch.Tensor] = {}
    for name, file in files.items():
        if file.is_file():
            with safe_open(str(file), framework="pt") as handle:
                stored = set(handle.keys())
                if name in stored:
                    found[name] = handle.get_tensor(name).float()
    missing = [name for name in names if name not in found]
    if missing:
        from rerankd.errors import UnsupportedModel

        raise UnsupportedModel(f"{model.path} has no {', '.join(missing)} in its safetensors")
    return found
