"""rerankd's own result fields, rendered the same on every dialect that carries them:
`raw_score` (the model's score, when a calibration makes `relevance_score` a probability)
and `spans` (when the request asked for them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from rerankd.ranking import RankedDocument
from rerankd.service import RerankResult


class SpanOut(BaseModel):
    start: int
    end: int
    score: float


def result_extras(result: RankedDocument) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    if result.raw is not None:
        extras["raw_score"] = result.raw
    if result.spans is not None:
        extras["spans"] = [span.as_dict() for span in result.spans]
    return extras


def usage_extras(result: RerankResult, spans: bool) -> dict[str, Any]:
    """Span windows scored for this request (their tokens are in the token counts)."""
    return {"span_windows": result.spans} if spans else {}
