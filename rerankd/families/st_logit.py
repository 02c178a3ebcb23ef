"""Causal-LM rerankers saved by sentence-transformers (6.x) with a `LogitScore` module.

Such a directory holds `modules.json` naming a `Transformer` (task "text-generation") and a
`LogitScore` whose config gives `true_token_id` and, optionally, `false_token_id`. It is
recognised from those files alone, with no family flag, and scored as `CrossEncoder.predict`
scores it: the pair built by the tokenizer's own pair template (the text modality; the
document cut when the pair is too long), left padding, the logits at the last token, the raw
score logit[true] − logit[false] (or logit[true] alone), and the saved activation (sigmoid).

A model whose saved modality is "message" (a chat template with query/document roles) is
refused with a message: rerankd does not render those templates yet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rerankd.engine.tokenize import Sequence
from rerankd.errors import UnsupportedModel
from rerankd.families.base import QuerySide
from rerankd.families.yes_no import _YesNoFamily

if TYPE_CHECKING:
    from rerankd.models import ResolvedModel

LOGIT_SCORE = "LogitScore"


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def logit_score_config(path: Path) -> dict[str, Any] | None:
    """The saved LogitScore module's config, or None when the model has none."""
    modules = _read(path / "modules.json")
    if not isinstance(modules, list):
        return None
    for module in modules:
        if isinstance(module, dict) and str(module.get("type", "")).endswith(LOGIT_SCORE):
            config = _read(path / str(module.get("path", "")) / "config.json")
            return config if isinstance(config, dict) else None
    return None


class SentenceTransformersLogitScore(_YesNoFamily):
    name = "st-logit-score"
    summary = "a causal LM saved by sentence-transformers with LogitScore (CrossEncoder)"
    reference = "sentence-transformers CrossEncoder.predict (Transformer + LogitScore)"
    deviation = "torch < 1e-5, ONNX < 1e-4 (tests/test_families_causal.py)"
    takes_instruction = False

    @classmethod
    def recognizes(cls, model: ResolvedModel) -> bool:
        return logit_score_config(model.path) is not None

    @classmethod
    def check(cls, model: ResolvedModel) -> None:
        config = logit_score_config(model.path)
        if config is None or not isinstance(config.get("true_token_id"), int):
            raise UnsupportedModel(
                f"{model.path} has no sentence-transformers LogitScore module with a "
                "true_token_id (modules.json)"
            )
        saved = _read(model.path / "sentence_bert_config.json") or {}
        if "message" in (saved.get("modality_config") or {}):
            raise UnsupportedModel(
                f"{model.path} formats pairs with a chat template (modality 'message'), which "
                "rerankd does not render yet; serve the model with its template's family "
                "(--family qwen3-reranker for Qwen3-Reranker conversions) instead"
            )

    def answer_tokens(self) -> tuple[list[int], list[float]]:
        config = logit_score_config(self.model.path) or {}
        false_id = config.get("false_token_id")
        if isinstance(false_id, int):
            return [int(config["true_token_id"]), false_id], [1.0, -1.0]
        return [int(config["true_token_id"])], [1.0]

    def query_side(self, query: str, instruction: str | None) -> QuerySide:
        specials = self.tokenizer.pair_specials
        cap = min(self.limits.query_cap, self.limits.max_length - specials - 1)
        query_ids = self.tokenizer.encode([query])[0][:cap]
        return QuerySide(query_ids, [], self.limits.max_length - len(query_ids) - specials)

    def sequence(self, side: QuerySide, window: list[int]) -> Sequence:
        return self.tokenizer.pair(side.before, window)
