"""mxbai-rerank-v2 (base, large): a Qwen2 causal LM that answers "1" or "0" after its prompt.

Reproduces the `mxbai-rerank` package's `MxbaiRerankV2`: the Qwen chat prefix, then
"instruction: …\\nquery: …" (the query side, at most 3/4 of max_length tokens), "\\n", then
"document: …" cut so the pair fits max_length, then "\\n", the task prompt and the assistant
suffix. The raw score is logit("1") − logit("0") at the last token, what the package's
`predict`/`rank` return. Relevance is the package's `normalize=True`: a sigmoid shifted by
half the model's estimated maximum logit, computed in float64 from the float32 logits, so two
documents tie only where their raw scores do (a bf16 sigmoid saturates to 1.0 and ties).

The package's `max_length` (8192) counts the query and the document, not the template; it is
lowered so that the whole prompt fits the model's positions, as the package lowers it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from rerankd.errors import InvalidInput, UnsupportedModel
from rerankd.families.base import QuerySide, sigmoid
from rerankd.families.yes_no import _causal_lm_of_type, _YesNoFamily

if TYPE_CHECKING:
    from rerankd.models import ResolvedModel

# The package's estimated maximum logit per published model (its default for any other: 12).
ESTIMATED_MAX = {
    "mixedbread-ai/mxbai-rerank-base-v2": 9.0,
    "mixedbread-ai/mxbai-rerank-large-v2": 12.0,
}
DEFAULT_ESTIMATED_MAX = 12.0


class MxbaiRerankV2(_YesNoFamily):
    name = "mxbai-rerank-v2"
    summary = "mxbai-rerank-v2 (base/large): Qwen2ForCausalLM, '1' vs '0' after its prompt"
    reference = "the mxbai-rerank package's MxbaiRerankV2.predict"
    deviation = (
        "torch ≤ 5.0e-6 measured (test bound 1e-5); ONNX < 1e-4 (tests/test_families_causal.py)"
    )
    takes_instruction = True
    default_instruction = None  # the package prompts with the query alone unless given one
    default_max_length = 8192  # the package's default

    SEP = "\n"
    TASK = (
        "You are a search relevance expert who evaluates how well documents match search "
        "queries. For each query-document pair, carefully analyze the semantic relationship "
        "between them, then provide your binary relevance judgment (0 for not relevant, 1 for "
        "relevant).\nRelevance:"
    )
    CHAT_PREFIX = (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
        "assistant.<|im_end|>\n<|im_start|>user\n"
    )
    CHAT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"

    @classmethod
    def recognizes(cls, model: ResolvedModel) -> bool:
        names = f"{model.source} {model.name} {model.path.name}".lower()
        return _causal_lm_of_type(model, ("qwen2",)) and "mxbai-rerank" in names

    @functools.cached_property
    def _template(self) -> tuple[list[int], list[int], list[int]]:
        """(chat prefix, separator, separator + task prompt + chat suffix) token ids."""
        sep = self.encode(self.SEP)
        return (
            self.encode(self.CHAT_PREFIX),
            sep,
            sep + self.encode(self.TASK) + self.encode(self.CHAT_SUFFIX),
        )

    @property
    def effective_max_length(self) -> int:
        """The package's max_length: query + document, lowered so the template fits too."""
        prefix, _, after = self._template
        return min(self.limits.max_length, self.model.max_positions - len(prefix) - len(after))

    def answer_tokens(self) -> tuple[list[int], list[float]]:
        one, zero = self.encode("1"), self.encode("0")
        if len(one) != 1 or len(zero) != 1:
            raise UnsupportedModel(f"{self.model.path}: the tokenizer has no single '1' and '0'")
        return [one[0], zero[0]], [1.0, -1.0]

    def query_side(self, query: str, instruction: str | None) -> QuerySide:
        prefix, sep, after = self._template
        max_length = self.effective_max_length
        text = f"query: {query}"
        if instruction:
            text = f"instruction: {instruction}{self.SEP}{text}"
        cap = min(self.limits.query_cap, max_length * 3 // 4)
        query_ids = self.encode(text)[:cap]
        room = max_length - len(query_ids) - len(sep)
        if room < 1:
            raise InvalidInput("the query leaves no room for the documents; shorten it")
        return QuerySide(prefix + query_ids + sep, after, room)

    def document_ids(self, documents: list[str]) -> list[list[int]]:
        return self.tokenizer.encode([f"document: {d}" for d in documents])

    @property
    def estimated_max(self) -> float:
        return ESTIMATED_MAX.get(self.model.source, DEFAULT_ESTIMATED_MAX)

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """The package's `sigmoid_normalize`, in float64."""
        return sigmoid(np.asarray(raw, dtype=np.float64) - self.estimated_max / 2)
