"""SigLIP (`SiglipModel`): CLIP's two towers, trained with a sigmoid loss.

Reproduces transformers' `SiglipModel`: texts are padded to the text tower's full length (64
tokens, as SigLIP was trained and as its model card tells the tokenizer to do) and pooled at
the last position; images go through the model's `SiglipImageProcessor`. The raw score is the
model's own logit, `exp(logit_scale) * cosine + logit_bias`, and the relevance is its sigmoid:
SigLIP's calibrated probability that the text and the image match.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from rerankd.engine.tokenize import Sequence
from rerankd.families.base import combine_embeddings, sigmoid
from rerankd.families.clip import Clip, special_id

if TYPE_CHECKING:
    import torch


class Siglip(Clip):
    name = "siglip"
    summary = "SigLIP (SiglipModel): text and image towers, sigmoid(scale * cosine + bias)"
    reference = "transformers SiglipModel (get_text_features / get_image_features, logits)"
    default_max_length = 64
    architecture = "SiglipModel"
    class_token = 0  # SigLIP's vision tower pools without a class token

    @functools.cached_property
    def scale_and_bias(self) -> tuple[float, float]:
        """exp(logit_scale) and logit_bias, read from the weights (without torch)."""
        from safetensors import safe_open

        values: dict[str, float] = {}
        for file in sorted(self.model.path.glob("*.safetensors")):
            with safe_open(str(file), framework="numpy") as weights:
                for name in ("logit_scale", "logit_bias"):
                    if name in weights.keys():  # noqa: SIM118 - safe_open has no __contains__
                        values[name] = float(np.asarray(weights.get_tensor(name)).reshape(-1)[0])
        return float(np.exp(values.get("logit_scale", 0.0))), values.get("logit_bias", 0.0)

    @functools.cached_property
    def pad_id(self) -> int:
        return special_id(self.model.path, "pad_token", self.tokenizer.pad_id)

    def text_item(self, window: list[int]) -> Sequence:
        """The window with its template, padded to the full length (as the reference pads)."""
        sequence = self.tokenizer.single(window)
        padding = self.text_length - len(sequence)
        return Sequence(
            sequence.input_ids + [self.pad_id] * padding, sequence.type_ids + [0] * padding
        )

    def combine_rows(self, outputs: np.ndarray, owners: np.ndarray, count: int) -> np.ndarray:
        scale, bias = self.scale_and_bias
        return scale * combine_embeddings(outputs, owners, count) + bias

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        return sigmoid(raw)

    def torch_head(self, dtype: torch.dtype, attention: str) -> torch.nn.Module:
        from transformers import AutoModel

        from rerankd.families.heads import DualTowerHead, load_pretrained

        model = load_pretrained(AutoModel, self.model, dtype, attention)
        return DualTowerHead(model, text_mask=False).eval()
