"""The Cohere rerank dialect, which Jina, Xinference and vLLM also speak: `/v1/rerank`, `/v2/rerank`."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from rerankd.api import state
from rerankd.api.body import body_schema, read_json, validate
from rerankd.api.errors import ERROR_RESPONSES
from rerankd.api.fields import TopN, instruction_field
from rerankd.api.inputs import (
    DocumentInput,
    MultiModal,
    QueryInput,
    count,
    to_document,
    to_documents,
)
from rerankd.documents import Rendered
from rerankd.service import RerankRequest

router = APIRouter(tags=["rerank"])


class CohereRerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = Field(None, description="Served model name (default: the first).")
    query: QueryInput = Field(description="Text, {'image': ...}, or one content part (vLLM).")
    documents: (
        Annotated[list[DocumentInput], Field(json_schema_extra={"minItems": 1})] | MultiModal
    ) = Field(
        description="Strings, {'text': ...} or {'image': ...} objects (Jina), or "
        "{'content': [parts]} with one document per text or image_url part (vLLM)."
    )
    top_n: TopN = Field(None, description="Best N; above the document count means all (as Cohere).")
    return_documents: StrictBool | None = Field(
        None, description="Include documents (default false)."
    )
    max_tokens_per_doc: StrictInt | None = Field(
        None, ge=1, description="Truncate documents to this many tokens."
    )
    max_chunks_per_doc: StrictInt | None = Field(
        None, ge=1, description="Split long documents into chunks (at most this many)."
    )
    raw_scores: StrictBool = Field(False, description="Raw logits instead of sigmoid scores.")
    instruction: StrictStr | None = instruction_field()

    def to_internal(self) -> RerankRequest:
        return RerankRequest(
            query=to_document(self.query),
            documents=to_documents(self.documents),
            model=self.model,
            top_n=self.top_n,
            clamp_top_n=True,
            raw_scores=self.raw_scores,
            strategy="chunk" if self.max_chunks_per_doc else None,
            max_tokens_per_doc=self.max_tokens_per_doc,
            max_chunks_per_doc=self.max_chunks_per_doc,
            instruction=self.instruction,
        )


class DocumentText(BaseModel):
    text: str | None = None
    image: str | None = None


class CohereResult(BaseModel):
    index: int
    relevance_score: float
    document: DocumentText | None = None


class CohereRerankResponse(BaseModel):
    id: str
    model: str
    results: list[CohereResult]
    meta: dict
    usage: dict


async def rerank(request: Request) -> JSONResponse:
    body = validate(CohereRerankRequest, await read_json(request))
    request.state.documents = count(body.documents)
    result = await state.service(request).rerank(body.to_internal())
    request.state.model = result.model
    request.state.tokens = result.tokens
    return JSONResponse(
        {
            "id": str(uuid.uuid4()),
            "model": result.model,
            "results": [
                {"index": r.index, "relevance_score": r.score, "document": _document(r.document)}
                if body.return_documents
                else {"index": r.index, "relevance_score": r.score}
                for r in result.results
            ],
            "meta": {
                "api_version": {"version": "2"},
                "billed_units": {"search_units": 1},
                "tokens": {"input_tokens": result.tokens, "output_tokens": 0},
            },
            "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
        }
    )


def _document(rendered: Rendered) -> dict[str, str]:
    return {"text": rendered} if isinstance(rendered, str) else rendered


# Cohere's SDK v1 posts to /v1/rerank and v2 to /v2/rerank; Jina, Xinference and vLLM use /v1.
for _path in ("/v1/rerank", "/v2/rerank"):
    router.add_api_route(
        _path,
        rerank,
        methods=["POST"],
        summary=f"Rerank documents (Cohere / Jina / Xinference / vLLM, {_path})",
        response_model=CohereRerankResponse,
        responses=ERROR_RESPONSES,
        openapi_extra=body_schema(CohereRerankRequest),
        operation_id=f"rerank_cohere_{_path.split('/')[1]}",
    )
