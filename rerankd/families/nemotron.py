"""nemotron-rerank-style rerankers: a Llama decoder read bidirectionally, pooled, one logit.

llama-nemotron-rerank-1b-v2 (published earlier as llama-3.2-nv-rerankqa-1b-v2) is Llama 3.2 1B
fine-tuned as a cross-encoder. Its config names `LlamaBidirectionalForSequenceClassification`
(model_type `llama_bidirec`, custom code upstream) and adds two fields: `pooling` (the card's
"avg": the mean of the last hidden state over real tokens; "last" and "cls" are its other
choices) and `temperature` (the logit is divided by it). Attention is bidirectional; the head
is `score`, a Linear without bias. Everything else is a plain LlamaConfig, so rerankd builds
it from transformers' Llama classes (bidirectional_head.py) and never runs the checkpoint's code.

The prompt is the card's `question:{query} \\n \\n passage:{passage}`, tokenized with the
tokenizer's own specials (Llama 3's `<|begin_of_text|>`) and cut at `max_length` from the
right. The document is tokenized as ":" + passage apart from the prompt before it: the
pre-tokenizer always splits between the letters of "passage" and the ":", so the ids are the
whole prompt's. Relevance is sigmoid(logit), as the card suggests.

Attention is bidirectional, so the query's keys and values depend on the document: there is
no prefix to share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from rerankd.engine.tokenize import Sequence
from rerankd.errors import UnsupportedModel
from rerankd.families.base import PaddingSide, PairFamily, QuerySide

if TYPE_CHECKING:
    import torch

    from rerankd.families.bidirectional_head import Pooling
    from rerankd.models import ResolvedModel

# Architectures whose body transformers implements and whose head is this one.
ARCHITECTURES = ("LlamaBidirectionalForSequenceClassification",)
POOLINGS = ("avg", "last", "cls")


class NemotronRerank(PairFamily):
    name = "nemotron-rerank"
    summary = (
        "nemotron-rerank-style (llama-nemotron-rerank-1b-v2): bidirectional Llama, pooled "
        "hidden state, one-logit score head"
    )
    reference = (
        "the llama-nemotron-rerank-1b-v2 model card's transformers code "
        "(LlamaBidirectionalForSequenceClassification, its prompt template)"
    )
    deviation = "torch < 1e-5, ONNX < 1e-4 (tests/test_families_nemotron.py)"
    shared_prefix = "none: bidirectional attention, the query's keys depend on the document"
    default_max_length = 8192  # the card's longest supported input
    padding_side: ClassVar[PaddingSide] = "right"
    PROMPT = "question:{query} \n \n passage"

    @classmethod
    def recognizes(cls, model: ResolvedModel) -> bool:
        architectures = model.config.get("architectures") or []
        return any(a in ARCHITECTURES for a in architectures)

    @classmethod
    def check(cls, model: ResolvedModel) -> None:
        pooling = model.config.get("pooling", "avg")
        if pooling not in POOLINGS:
            raise UnsupportedModel(
                f"{model.path} pools with {pooling!r}; rerankd implements {', '.join(POOLINGS)}"
            )
        labels = len(model.config.get("id2label") or {}) or int(model.config.get("num_labels", 1))
        if labels != 1:
            raise UnsupportedModel(
                f"{model.path} scores {labels} labels; a reranker needs exactly one"
            )

    @property
    def uses_type_ids(self) -> bool:
        return False

    def query_side(self, query: str, instruction: str | None) -> QuerySide:
        query = self.tokenizer.truncate_text(query, self.limits.query_cap)
        before = self.tokenizer.encode([self.PROMPT.format(query=query)])[0]
        room = self.limits.max_length - self.tokenizer.single_specials - len(before)
        return QuerySide(before, [], room)

    def document_ids(self, documents: list[str]) -> list[list[int]]:
        return self.tokenizer.encode([f":{d}" for d in documents])

    def sequence(self, side: QuerySide, window: list[int]) -> Sequence:
        return self.tokenizer.single(side.before + window)

    def torch_head(self, dtype: torch.dtype, attention: str) -> torch.nn.Module:
        from rerankd.families.bidirectional_head import load_bidirectional

        pooling = cast("Pooling", self.model.config.get("pooling", "avg"))
        temperature = float(self.model.config.get("temperature", 1.0))
        return load_bidirectional(self.model, pooling, temperature, dtype, attention)
