"""Causal language models that rerank by answering "yes" or "no" after a prompt.

Each family here writes its model's published prompt around the query and the document, runs
the decoder to the last real token, and reads a few rows of the LM head there
(`TokenLogitHead`): never the vocabulary-sized logits.

- `Qwen3Reranker` reproduces the Qwen3-Reranker model card's transformers code: the chat
  template with the system prompt, `<Instruct>: …\\n<Query>: …\\n<Document>: …`, the assistant
  suffix with the empty think block; the text between prefix and suffix cut at
  `max_length - len(prefix) - len(suffix)` tokens; P(yes) = softmax over the (no, yes) logits
  at the last position = sigmoid(logit_yes - logit_no). The raw score is that difference.
- `BgeGemmaReranker` reproduces FlagEmbedding's `FlagLLMReranker.compute_score`
  (bge-reranker-v2-gemma): `<bos>` + "A: {query}" (at most 3/4 of max_length tokens) + "\\n" +
  "B: {passage}" (cut to fit), then "\\n" + the prompt; the raw score is the "Yes" logit and
  sigmoid is FlagEmbedding's `normalize=True`. The instruction replaces its prompt.

Where rerankd extends the references (chunking long documents, a query longer than its cap),
the template stays the same and only which tokens of the document or query are kept differs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rerankd.engine.backend import Batch
from rerankd.engine.plan import ScoringPlan
from rerankd.errors import UnsupportedModel
from rerankd.families.base import PaddingSide, PairFamily, QuerySide
from rerankd.families.prefix import PrefixedSequence, run_prefixed, share_prefix

if TYPE_CHECKING:
    import torch

    from rerankd.models import ResolvedModel


def _named_like_a_reranker(model: ResolvedModel) -> bool:
    names = f"{model.source} {model.name} {model.path.name}".lower()
    return "rerank" in names


def _causal_lm_of_type(model: ResolvedModel, model_types: tuple[str, ...]) -> bool:
    architectures = model.config.get("architectures") or []
    return model.config.get("model_type") in model_types and any(
        a.endswith("ForCausalLM") for a in architectures
    )


class _YesNoFamily(PairFamily):
    """A causal LM read at its last token, on the rows of the tokens that answer."""

    # As the references pad; the head reads the last real token either way.
    padding_side: ClassVar[PaddingSide] = "left"
    int8_refusal: ClassVar[str | None] = None
    shared_prefix: ClassVar[str | None] = (
        "torch (CPU and CUDA; not Gemma2's sliding-window layers); ONNX Runtime runs whole "
        "sequences: the exported graph takes no key/value inputs"
    )

    @property
    def uses_type_ids(self) -> bool:
        return False

    def answer_tokens(self) -> tuple[list[int], list[float]]:
        """Token ids of the LM-head rows to read, and the coefficient of each in the score."""
        raise NotImplementedError

    def torch_head(self, dtype: torch.dtype, attention: str) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        from rerankd.families.heads import TokenLogitHead, load_pretrained

        causal_lm = load_pretrained(AutoModelForCausalLM, self.model, dtype, attention)
        token_ids, coefficients = self.answer_tokens()
        return TokenLogitHead(causal_lm, token_ids, coefficients).eval()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode([text])[0]

    def finish_plan(self, plan: ScoringPlan, side: QuerySide) -> ScoringPlan:
        """With sharing on, the sequences as items that share the query side."""
        return share_prefix(plan, len(side.before)) if self.share_prefix else plan

    def run(self, backend_run: Callable[[Batch], np.ndarray], items: list[Any]) -> np.ndarray:
        if items and isinstance(items[0], PrefixedSequence):
            return run_prefixed(backend_run, items, self.pad_id)
        return super().run(backend_run, items)


class Qwen3Reranker(_YesNoFamily):
    name = "qwen3-reranker"
    summary = "Qwen3-Reranker (0.6B/4B/8B): Qwen3ForCausalLM, yes/no at the last token"
    reference = "the Qwen3-Reranker model card's transformers code"
    deviation = "torch: raw ≤ 7.2e-6; ONNX ≤ 9.1e-6; shared prefix vs whole < 1e-5"
    takes_instruction = True
    default_instruction = (
        "Given a web search query, retrieve relevant passages that answer the query"
    )
    # The model card's own max_length: long enough for any passage a RAG pipeline retrieves,
    # well under the model's 32k, and what the published scores were measured with.
    default_max_length = 8192

    PREFIX = (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the "
        'Query and the Instruct provided. Note that the answer can only be "yes" or "no".'
        "<|im_end|>\n<|im_start|>user\n"
    )
    SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"

    @classmethod
    def recognizes(cls, model: ResolvedModel) -> bool:
        return _causal_lm_of_type(model, ("qwen3",)) and _named_like_a_reranker(model)

    @classmethod
    def check(cls, model: ResolvedModel) -> None:
        architectures = model.config.get("architectures") or []
        if not any(a.endswith("ForCausalLM") for a in architectures):
            raise UnsupportedModel(
                f"{model.path} is not a causal LM ({architectures}); the qwen3-reranker family "
                "reads the LM head of Qwen3ForCausalLM. A -seq-cls conversion is served by the "
                "cross-encoder family."
            )

    @functools.cached_property
    def _template(self) -> tuple[list[int], list[int]]:
        return self.encode(self.PREFIX), self.encode(self.SUFFIX)

    def answer_tokens(self) -> tuple[list[int], list[float]]:
        ids = [self.tokenizer.token_id("yes"), self.tokenizer.token_id("no")]
        if None in ids:
            raise UnsupportedModel(
                f"{self.model.path}: the tokenizer has no single 'yes' and 'no' tokens"
            )
        return [int(i) for i in ids if i is not None], [1.0, -1.0]

    def query_side(self, query: str, instruction: str | None) -> QuerySide:
        prefix, suffix = self._template
        query = self.tokenizer.truncate_text(query, self.limits.query_cap)
        # The document is tokenized apart as " " + text: ": " always ends a pre-token for
        # Qwen's byte-level BPE, so the ids equal those of the whole formatted string.
        head = self.encode(f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>:")
        room = self.limits.max_length - len(prefix) - len(suffix) - len(head)
        return QuerySide(prefix + head, suffix, room)

    def document_ids(self, documents: list[str]) -> list[list[int]]:
        return self.tokenizer.encode([" " + d for d in documents])


class BgeGemmaReranker(_YesNoFamily):
    name = "bge-reranker-gemma"
    summary = (
        "bge-reranker-v2-gemma: GemmaForCausalLM, the 'Yes' logit after FlagEmbedding's prompt"
    )
    reference = "FlagEmbedding FlagLLMReranker.compute_score"
    deviation = "torch ≤ 2.4e-6; ONNX ≤ 4.2e-6; shared prefix vs whole < 1e-5"
    takes_instruction = True
    default_instruction = (
        "Given a query A and a passage B, determine whether the passage contains an answer to "
        "the query by providing a prediction of either 'Yes' or 'No'."
    )
    default_max_length = 512  # FlagLLMReranker's default, which its scores were published with

    @classmethod
    def recognizes(cls, model: ResolvedModel) -> bool:
        return _causal_lm_of_type(model, ("gemma", "gemma2")) and _named_like_a_reranker(model)

    @functools.cached_property
    def _specials(self) -> tuple[int | None, list[int]]:
        """(the BOS id FlagEmbedding prepends, or None; the separator's ids)."""
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(self.model.path))
        bos = hf.bos_token_id if hf.bos_token_id != hf.pad_token_id else None
        return bos, self.encode("\n")

    def answer_tokens(self) -> tuple[list[int], list[float]]:
        yes = self.encode("Yes")
        if not yes:
            raise UnsupportedModel(f"{self.model.path}: the tokenizer cannot encode 'Yes'")
        return [yes[0]], [1.0]

    def query_side(self, query: str, instruction: str | None) -> QuerySide:
        bos, sep = self._specials
        max_length = self.limits.max_length
        query_ids = self.encode(f"A: {query}")[: self.limits.query_cap]
        before = ([] if bos is None else [bos]) + query_ids + sep
        prompt = self.encode(instruction or "")
        # FlagEmbedding cuts the passage to max_length, then cuts (sep + passage) so the pair
        # fits in max_length + len(sep) + len(prompt); sep and the prompt follow after that.
        fits = max_length + len(sep) + len(prompt) - len(before)
        return QuerySide(before, sep + prompt, min(fits, max_length))

    def document_ids(self, documents: list[str]) -> list[list[int]]:
        return self.tokenizer.encode([f"B: {d}" for d in documents])
