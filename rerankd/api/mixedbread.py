"""Mixedbread's rerank dialect: `POST /v1/reranking`.

The `mixedbread` SDK posts `{model, query, input, rank_fields?, top_k?, return_input?,
rewrite_query?}` and reads `data[].index`, `data[].score`, `data[].input`, `usage`, `model`,
`top_k` and `return_input`. `input` items are strings or objects (read as `documents.py`
says; without `rank_fields` every field of an object is read). `top_k` is -1 (Mixedbread's
default) for all, and one above the number of documents means all, as Mixedbread's clients
expect (LlamaIndex sends its own top_n, 10 by default). rerankd does not rewrite queries, so
`rewrite_query: true` is refused rather than ignored.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from rerankd.api import state
from rerankd.api.body import body_schema, read_json, validate
from rerankd.api.documents import JsonObject, render_all
from rerankd.api.errors import ERROR_RESPONSES
from rerankd.api.fields import Text, instruction_field
from rerankd.documents import TextDocument
from rerankd.errors import InvalidInput
from rerankd.service import RerankRequest

router = APIRouter(tags=["rerank"])


class MixedbreadRerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = Field(None, description="Served model name (default: the first).")
    query: Text
    input: Annotated[list[Text | JsonObject], Field(json_schema_extra={"minItems": 1})] = Field(
        description="Strings, or objects read through `rank_fields`."
    )
    rank_fields: list[StrictStr] | None = Field(
        None, description="Object fields to rank on (default: every field)."
    )
    top_k: StrictInt = Field(
        -1, ge=-1, description="Best K; -1 (the default) or above the count means all."
    )
    return_input: StrictBool = Field(False, description="Return each input as it was sent.")
    rewrite_query: StrictBool = Field(False, description="Must be false: no query rewriting.")
    instruction: StrictStr | None = instruction_field()

    def to_internal(self) -> RerankRequest:
        if self.rewrite_query:
            raise InvalidInput("rewrite_query is not supported: rerankd ranks the query as sent")
        if self.top_k == 0:
            raise InvalidInput("top_k must be at least 1, or -1 for all")
        return RerankRequest(
            query=TextDocument(self.query),
            documents=[
                TextDocument(text)
                for text in render_all(self.input, self.rank_fields, default_fields="all")
            ],
            model=self.model,
            top_n=None if self.top_k == -1 else self.top_k,
            clamp_top_n=True,
            instruction=self.instruction,
        )


class MixedbreadResult(BaseModel):
    index: int
    score: float
    input: str | dict[str, object] | None = None
    object: str = "rank_result"


class MixedbreadUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0


class MixedbreadRerankResponse(BaseModel):
    object: str = "list"
    model: str
    data: list[MixedbreadResult]
    usage: MixedbreadUsage
    top_k: int
    return_input: bool


@router.post(
    "/v1/reranking",
    summary="Rerank documents (Mixedbread)",
    response_model=MixedbreadRerankResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=body_schema(MixedbreadRerankRequest),
)
async def rerank(request: Request) -> JSONResponse:
    body = validate(MixedbreadRerankRequest, await read_json(request))
    request.state.documents = len(body.input)
    result = await state.service(request).rerank(body.to_internal())
    request.state.model = result.model
    request.state.tokens = result.tokens
    request.state.warnings = result.warnings
    return JSONResponse(
        {
            "object": "list",
            "model": result.model,
            "data": [
                {
                    "index": r.index,
                    "score": r.score,
                    **({"input": body.input[r.index]} if body.return_input else {}),
                    "object": "rank_result",
                }
                for r in result.results
            ],
            "usage": {
                "prompt_tokens": result.tokens,
                "total_tokens": result.tokens,
                "completion_tokens": 0,
            },
            "top_k": len(result.results),
            "return_input": body.return_input,
        }
    )
