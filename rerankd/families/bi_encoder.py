"""Bi-encoders: a sentence-embedding encoder (`*Model`), such as the built-in all-MiniLM-L6-v2.

Reproduces sentence-transformers' `SentenceTransformer.encode` with mean pooling and L2
normalisation, then the cosine of query and document; the relevance is (cosine + 1) / 2. A
bi-encoder never reads the query and the document together, so it ranks less precisely than
a cross-encoder: it is the zero-download default, not the recommended reranker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rerankd.families.base import EmbeddingFamily

if TYPE_CHECKING:
    import torch

    from rerankd.models import ResolvedModel


class BiEncoder(EmbeddingFamily):
    name = "bi-encoder"
    summary = "sentence-embedding encoder (*Model), mean pooling, cosine (the built-in model)"
    reference = "sentence-transformers SentenceTransformer.encode + cosine"

    @classmethod
    def recognizes(cls, model: ResolvedModel) -> bool:
        architectures = model.config.get("architectures") or []
        return not architectures or any(a.endswith("Model") for a in architectures)

    def torch_head(self, dtype: torch.dtype, attention: str) -> torch.nn.Module:
        from transformers import AutoModel

        from rerankd.families.heads import MeanPoolHead, load_pretrained

        return MeanPoolHead(load_pretrained(AutoModel, self.model, dtype, attention)).eval()
