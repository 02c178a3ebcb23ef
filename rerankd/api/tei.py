"""Hugging Face Text Embeddings Inference's rerank dialect (`/rerank` with `texts`)."""

from __future__ import annotations

from typing import Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StrictBool

from rerankd.api import state
from rerankd.api.fields import Text, Texts
from rerankd.documents import TextDocument
from rerankd.service import RerankRequest


class TeiRerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: Text
    texts: Texts
    raw_scores: StrictBool = False
    return_text: StrictBool = False
    truncate: StrictBool | None = None  # TEI: without truncation, a too-long input is an error
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"


class TeiResult(BaseModel):
    index: int
    score: float
    text: str | None = None


async def rerank(request: Request, body: TeiRerankRequest) -> JSONResponse:
    request.state.documents = len(body.texts)
    internal = RerankRequest(
        query=TextDocument(body.query),
        documents=[TextDocument(text) for text in body.texts],
        raw_scores=body.raw_scores,
        strategy="truncate",
        truncation_direction=body.truncation_direction.lower(),
        allow_truncation=bool(body.truncate),
    )
    result = await state.service(request).rerank(internal)
    request.state.model = result.model
    request.state.tokens = result.tokens
    request.state.warnings = result.warnings
    return JSONResponse(
        [
            {"index": r.index, "score": r.score, "text": r.document}
            if body.return_text
            else {"index": r.index, "score": r.score}
            for r in result.results
        ]
    )
