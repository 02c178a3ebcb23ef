"""Cross-encoders: any one-label `*ForSequenceClassification`, encoder or decoder.

Reproduces sentence-transformers' `CrossEncoder.predict` (and FlagEmbedding's
`FlagReranker.compute_score`, which is the same function for bge-reranker-v2-m3): the pair is
built by the tokenizer's own pair template, the document is cut when the pair is too long
(`truncation="only_second"`), and the score is the single logit, through a sigmoid. Decoder
models (Qwen/Llama/Gemma `ForSequenceClassification`, such as the `-seq-cls` conversions of
Qwen3-Reranker) pool their last real token inside transformers, and models without segment
ids (ModernBERT, decoders) get none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rerankd.engine.tokenize import Sequence
from rerankd.errors import UnsupportedModel
from rerankd.families.base import PairFamily, QuerySide

if TYPE_CHECKING:
    import torch

    from rerankd.models import ResolvedModel


# Decoder classifiers find each sequence's last token through pad_token_id.
_DECODER_TYPES = ("qwen", "llama", "gemma", "mistral", "phi")


class CrossEncoder(PairFamily):
    name = "cross-encoder"
    summary = "one-label *ForSequenceClassification (BERT, XLM-R, ModernBERT, decoder seq-cls)"
    reference = "sentence-transformers CrossEncoder.predict"

    @classmethod
    def recognizes(cls, model: ResolvedModel) -> bool:
        architectures = model.config.get("architectures") or []
        return any(a.endswith("ForSequenceClassification") for a in architectures)

    @classmethod
    def check(cls, model: ResolvedModel) -> None:
        labels = len(model.config.get("id2label") or {}) or int(model.config.get("num_labels", 1))
        if labels != 1:
            raise UnsupportedModel(
                f"{model.path} is a classifier with {labels} labels; a reranker needs exactly "
                "one (a relevance logit)"
            )
        if cls._is_decoder(model) and model.config.get("pad_token_id") is None:
            raise UnsupportedModel(
                f"{model.path} is a decoder classifier without pad_token_id in its config; "
                "transformers needs it to find each sequence's last token"
            )

    @staticmethod
    def _is_decoder(model: ResolvedModel) -> bool:
        return bool(model.config.get("is_decoder")) or any(
            name in str(model.config.get("model_type")) for name in _DECODER_TYPES
        )

    def query_side(self, query: str, instruction: str | None) -> QuerySide:
        specials = self.tokenizer.pair_specials
        cap = min(self.limits.query_cap, self.limits.max_length - specials - 1)
        query_ids = self.tokenizer.encode([query])[0][:cap]
        return QuerySide(query_ids, [], self.limits.max_length - len(query_ids) - specials)

    def sequence(self, side: QuerySide, window: list[int]) -> Sequence:
        return self.tokenizer.pair(side.before, window)

    def torch_head(self, dtype: torch.dtype, attention: str) -> torch.nn.Module:
        from transformers import AutoModelForSequenceClassification

        from rerankd.families.heads import SingleLogitHead, load_pretrained

        model = load_pretrained(AutoModelForSequenceClassification, self.model, dtype, attention)
        return SingleLogitHead(model, decoder=self._is_decoder(self.model)).eval()
