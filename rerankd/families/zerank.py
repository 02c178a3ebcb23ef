"""zerank-style rerankers: a Qwen3 causal LM reading the query as the system turn.

The template (zerank-1-small / zerank-2 model cards, `modeling_zeranker.py`): the chat
`system = query, user = document`, then the assistant turn is opened; the raw score is the
"Yes" logit at the last token (no "No" row), and relevance is `sigmoid(logit / SCALE)` with the
cards' scale of 5. Only the template is code: the network is transformers' Qwen3ForCausalLM,
so rerankd never runs the checkpoint's `modeling_zeranker.py`.

The query comes first, so the request's prefix is shared (prefix.py). The document is
tokenized apart from the "user\\n" before it; Qwen's pre-tokenizer splits there, so the ids
equal the whole prompt's unless a document starts with a line break.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from rerankd.errors import UnsupportedModel
from rerankd.families.base import QuerySide, sigmoid
from rerankd.families.yes_no import _causal_lm_of_type, _YesNoFamily

if TYPE_CHECKING:
    from rerankd.models import ResolvedModel


class ZerankReranker(_YesNoFamily):
    name = "zerank"
    summary = "zerank-style (zerank-1-small, zerank-2): Qwen3ForCausalLM, query as the system turn"
    reference = "the zerank model cards' template and score: sigmoid(logit('Yes') / 5)"
    deviation = "torch < 1e-5, ONNX < 1e-4 (tests/test_families_causal.py)"
    takes_instruction = False  # the system turn is the query itself
    default_max_length = 8192
    SCALE = 5.0  # the cards' divisor before the sigmoid

    SYSTEM = "<|im_start|>system\n{query}<|im_end|>\n<|im_start|>user\n"
    SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"

    @classmethod
    def recognizes(cls, model: ResolvedModel) -> bool:
        names = f"{model.source} {model.name} {model.path.name}".lower()
        return _causal_lm_of_type(model, ("qwen3",)) and "zerank" in names

    @functools.cached_property
    def _suffix(self) -> list[int]:
        return self.encode(self.SUFFIX)

    def answer_tokens(self) -> tuple[list[int], list[float]]:
        yes = self.tokenizer.token_id("Yes")
        if yes is None:
            raise UnsupportedModel(f"{self.model.path}: the tokenizer has no single 'Yes' token")
        return [yes], [1.0]

    def query_side(self, query: str, instruction: str | None) -> QuerySide:
        query = self.tokenizer.truncate_text(query, self.limits.query_cap)
        before = self.encode(self.SYSTEM.format(query=query))
        return QuerySide(
            before, self._suffix, self.limits.max_length - len(before) - len(self._suffix)
        )

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        return sigmoid(np.asarray(raw, dtype=np.float64) / self.SCALE)
