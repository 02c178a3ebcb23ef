"""Extension fields for bge's layerwise rerankers, on the native and Cohere-style routes.

FlagEmbedding's `compute_score` arguments, per request: `cutoff_layers` (which layer's head
scores; one layer, as a number or a one-element list), and for the lightweight model
`compress_ratio` and `compress_layers`. The model's family checks them (a 400 naming the
field); a model of another family answers 400 when any is sent.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, StrictInt


class LayerFields(BaseModel):
    cutoff_layers: StrictInt | list[StrictInt] | None = Field(
        None,
        description="Layerwise bge rerankers: the layer whose head scores (one layer; a "
        "one-element list is accepted as FlagEmbedding takes it). Default: the model's.",
    )
    compress_ratio: StrictInt | None = Field(
        None,
        description="bge-reranker-v2.5-gemma2-lightweight: passage tokens merged into one "
        "(1, 2, 4 or 8). Default: the model's.",
    )
    compress_layers: list[StrictInt] | None = Field(
        None,
        description="bge-reranker-v2.5-gemma2-lightweight: the layers before which the "
        "passage is compressed. Default: the model's.",
    )

    def family_options(self) -> dict[str, object]:
        """The fields that were sent, for the model's family to check."""
        sent = {
            "cutoff_layers": self.cutoff_layers,
            "compress_ratio": self.compress_ratio,
            "compress_layers": self.compress_layers,
        }
        return {k: v for k, v in sent.items() if v is not None}
