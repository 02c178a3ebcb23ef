"""How much arithmetic a cross-encoder needs for the tokens it really has (no padding).

For an encoder with `L` layers of width `h`, FFN width `f`, and a sequence of `n` tokens:

    FLOPs(n) = 2 * P_layers * n  +  4 * L * h * n**2

The first term is every weight used once per token as a multiply-add (P_layers = the
parameters inside the transformer layers: Q, K, V, O, both FFN matrices, biases and layer
norms, about 4h^2 + 2hf per layer). The second is attention itself: Q.K^T and
softmax.V each take n^2 * h multiply-adds per layer. Embedding look-ups, the pooler and the
one-logit head are left out (they are a rounding error here). Counting only real tokens makes
this "useful" FLOPs: what a padding-free engine must do, whatever a system actually spends.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EncoderShape:
    """What the FLOP model needs to know about a model."""

    layers: int
    hidden: int
    layer_params: int

    @classmethod
    def from_dir(cls, path: Path) -> EncoderShape:
        from safetensors import safe_open

        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        params = 0
        for file in path.glob("*.safetensors"):
            with safe_open(str(file), framework="numpy") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                    if ".encoder.layer." in f".{key}":
                        size = 1
                        for dim in handle.get_slice(key).get_shape():
                            size *= dim
                        params += size
        return cls(int(config["num_hidden_layers"]), int(config["hidden_size"]), params)

    def flops(self, tokens: int) -> float:
        """FLOPs of one forward pass over one sequence of `tokens` real tokens."""
        return 2.0 * self.layer_params * tokens + 4.0 * self.layers * self.hidden * tokens**2

    def total(self, lengths: Iterable[int]) -> float:
        return sum(self.flops(n) for n in lengths)


FORMULA = "FLOPs(n) = 2 x P_layers x n + 4 x L x h x n^2, summed over real (unpadded) tokens"
