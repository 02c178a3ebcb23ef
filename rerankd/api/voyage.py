"""Voyage AI's rerank dialect, served on `/v1/rerank` beside Cohere's (see `cohere.py`).

Voyage posts `{query, documents, model, top_k, return_documents, truncation}` to
`{base_url}/rerank` and reads `data[].index`, `data[].relevance_score`, `data[].document`
(a string) and `usage.total_tokens`. Nothing in a request reliably says it is Voyage's (its SDK
sends `top_k` and `truncation`, a hand-written call may send neither), so `/v1/rerank`
answers every dialect at once: the Voyage fields sit beside Cohere's `results`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, StrictInt, model_validator

from rerankd.api.lenient import WordBool
from rerankd.ranking import RankedDocument


class VoyageFields(BaseModel):
    """The request fields only Voyage sends; mixed into the `/v1/rerank` request model."""

    top_k: StrictInt | None = Field(
        None, ge=0, description="Voyage's name for top_n; give one or both with the same value."
    )
    truncation: WordBool | None = Field(
        None,
        description="Voyage: false makes a document too long for the model an error "
        "instead of truncating it (default true).",
    )

    @model_validator(mode="after")
    def _one_top(self) -> VoyageFields:
        top_n = getattr(self, "top_n", None)
        if self.top_k is not None and top_n is not None and top_n != self.top_k:
            raise ValueError(f"top_n ({top_n}) and top_k ({self.top_k}) disagree; send one")
        return self


class VoyageResult(BaseModel):
    index: int
    relevance_score: float
    document: str | None = None


def render_data(results: list[RankedDocument], return_documents: bool) -> list[dict[str, object]]:
    """Voyage's `data` array: the document is the plain string, when asked for."""
    return [
        {"index": r.index, "relevance_score": r.score, "document": r.document}
        if return_documents
        else {"index": r.index, "relevance_score": r.score}
        for r in results
    ]
