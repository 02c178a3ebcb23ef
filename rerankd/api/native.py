"""The native dialect: `POST /rerank` (also TEI's, when the body has `texts`) and `/batch_rerank`.

The request and response of the classic FastAPI tutorial for bge-reranker-v2-m3
(`{"query", "documents"}` -> `{"query", "results": [{"document", "score"}]}`) work as they are.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from rerankd.api import state, tei
from rerankd.api.body import body_schema, read_json, validate
from rerankd.api.errors import ERROR_RESPONSES, RERANK_ERROR_RESPONSES, TEI_DIALECT
from rerankd.api.extensions import SpanOut, result_extras, usage_extras
from rerankd.api.fields import (
    MaxSpans,
    MinRelevance,
    Priority,
    TopN,
    instruction_field,
    spans_field,
)
from rerankd.api.inputs import DocumentsInput, QueryInput, count, echo, to_document, to_documents
from rerankd.api.layers import LayerFields
from rerankd.service import RerankRequest, RerankResult

router = APIRouter(tags=["rerank"])


class NativeRerankRequest(LayerFields):
    model_config = ConfigDict(extra="ignore")

    query: QueryInput = Field(description="The search query: text, or {'image': ...}.")
    documents: DocumentsInput = Field(
        description="Passages to rank: strings, {'text': ...} or {'image': base64 or data URL}."
    )
    top_n: TopN = Field(None, description="Return only the best N (default: all).")
    return_documents: StrictBool = Field(True, description="Include each document's text.")
    raw_scores: StrictBool = Field(False, description="Raw logits instead of sigmoid scores.")
    model: StrictStr | None = Field(None, description="Served model name (default: the first).")
    max_tokens_per_doc: StrictInt | None = Field(
        None, ge=1, description="Cap on tokens per document."
    )
    long_document_strategy: Literal["truncate", "chunk"] | None = Field(
        None, description="truncate or chunk long documents."
    )
    max_chunks_per_doc: StrictInt | None = Field(
        None, ge=1, description="Chunks per document with 'chunk'."
    )
    instruction: StrictStr | None = instruction_field()
    priority: Priority = 0
    min_relevance: MinRelevance = None
    return_spans: StrictBool = spans_field()
    max_spans: MaxSpans = None

    def to_internal(self) -> RerankRequest:
        return RerankRequest(
            query=to_document(self.query),
            documents=to_documents(self.documents),
            model=self.model,
            top_n=self.top_n,
            raw_scores=self.raw_scores,
            strategy=self.long_document_strategy,
            max_tokens_per_doc=self.max_tokens_per_doc,
            max_chunks_per_doc=self.max_chunks_per_doc,
            instruction=self.instruction,
            options=self.family_options(),
            priority=self.priority,
            min_relevance=self.min_relevance,
            return_spans=self.return_spans,
            max_spans=self.max_spans,
        )


class NativeResult(BaseModel):
    index: int
    document: str | dict[str, str] | None = None
    score: float
    relevance_score: float
    raw_score: float | None = None
    spans: list[SpanOut] | None = None


class Usage(BaseModel):
    documents: int
    pairs: int
    tokens: int
    cached: int
    prompt_tokens: int
    total_tokens: int


class NativeRerankResponse(BaseModel):
    query: str | dict[str, str]
    model: str
    results: list[NativeResult]
    usage: Usage
    warnings: list[str] = Field(
        default_factory=list,
        description="Why these scores may be unreliable (also sent as `Warning` headers).",
    )


def render(
    query: QueryInput, result: RerankResult, return_documents: bool, spans: bool = False
) -> dict[str, Any]:
    return {
        "query": echo(query),
        "model": result.model,
        "results": [
            {
                "index": r.index,
                **({"document": r.document} if return_documents else {}),
                "score": r.score,
                "relevance_score": r.score,
                **result_extras(r),
            }
            for r in result.results
        ],
        "usage": {
            "documents": result.documents,
            "pairs": result.documents,
            "tokens": result.tokens,
            "cached": result.cached,
            "prompt_tokens": result.tokens,
            "total_tokens": result.tokens,
            **usage_extras(result, spans),
        },
        "warnings": list(result.warnings),
    }


@router.post(
    "/rerank",
    summary="Rerank documents (native, or TEI when the body has `texts`)",
    response_model=NativeRerankResponse | list[tei.TeiResult],
    responses=RERANK_ERROR_RESPONSES,
    openapi_extra=body_schema(NativeRerankRequest, tei.TeiRerankRequest),
)
async def rerank(request: Request) -> JSONResponse:
    data = await read_json(request)
    if isinstance(data, dict) and "texts" in data and "documents" not in data:
        request.state.dialect = TEI_DIALECT
        return await tei.rerank(request, validate(tei.TeiRerankRequest, data))
    body = validate(NativeRerankRequest, data)
    request.state.documents = count(body.documents)
    result = await state.service(request).rerank(body.to_internal())
    request.state.model = result.model
    request.state.tokens = result.tokens
    request.state.warnings = result.warnings
    return JSONResponse(render(body.query, result, body.return_documents, body.return_spans))


class BatchQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: QueryInput
    documents: DocumentsInput
    top_n: TopN = None
    min_relevance: MinRelevance = None  # this query's threshold; default: the call's


class BatchRerankRequest(LayerFields):
    model_config = ConfigDict(extra="ignore")

    queries: list[BatchQuery] = Field(min_length=1, description="Queries, each with its documents.")
    model: StrictStr | None = None
    return_documents: StrictBool = True
    raw_scores: StrictBool = False
    instruction: StrictStr | None = instruction_field()
    min_relevance: MinRelevance = None
    return_spans: StrictBool = spans_field()
    max_spans: MaxSpans = None


class BatchRerankResponse(BaseModel):
    model: str
    results: list[NativeRerankResponse]
    warnings: list[str] = Field(default_factory=list, description="Every query's, once each.")


@router.post(
    "/batch_rerank",
    summary="Rerank several queries in one call; their pairs are batched together",
    response_model=BatchRerankResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=body_schema(BatchRerankRequest),
)
async def batch_rerank(request: Request) -> JSONResponse:
    body = validate(BatchRerankRequest, await read_json(request))
    service = state.service(request)
    total = sum(len(q.documents) for q in body.queries)
    service.check_document_count(total)
    request.state.documents = total
    internal = [
        RerankRequest(
            query=to_document(q.query),
            documents=to_documents(q.documents),
            top_n=q.top_n,
            model=body.model,
            raw_scores=body.raw_scores,
            instruction=body.instruction,
            options=body.family_options(),
            min_relevance=body.min_relevance if q.min_relevance is None else q.min_relevance,
            return_spans=body.return_spans,
            max_spans=body.max_spans,
        )
        for q in body.queries
    ]
    results = await service.rerank_many(internal)
    request.state.model = results[0].model
    request.state.tokens = sum(r.tokens for r in results)
    request.state.warnings = sorted({w for r in results for w in r.warnings})
    rendered = [
        render(q.query, r, body.return_documents, body.return_spans)
        for q, r in zip(body.queries, results, strict=True)
    ]
    warnings = request.state.warnings
    return JSONResponse({"model": results[0].model, "results": rendered, "warnings": warnings})
