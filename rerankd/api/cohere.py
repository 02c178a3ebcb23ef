"""The Cohere rerank dialect, which Jina, Xinference, vLLM and Voyage also speak: `/v1/rerank`, `/v2/rerank`.

One request model takes every dialect's fields (Voyage's `top_k` and `truncation`, vLLM's
`truncate_prompt_tokens`, `truncation_side`, `use_activation` and `top_n: 0` for all) and one
response answers all of them at once: Cohere's, Jina's and vLLM's `results`, Xinference's
`meta.tokens`, Voyage's `object` and `data`, and `usage.total_tokens`. See `voyage.py` for why
the route does not try to tell the dialects apart. Booleans may be the strings "true" and
"false" here (RAGFlow's Xinference reranker sends them so).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from rerankd.api import state
from rerankd.api.body import body_schema, read_json, validate
from rerankd.api.documents import JsonObject, render_all
from rerankd.api.errors import ERROR_RESPONSES
from rerankd.api.extensions import SpanOut, result_extras, usage_extras
from rerankd.api.fields import (
    MaxSpans,
    MinRelevance,
    Priority,
    Text,
    instruction_field,
    spans_field,
)
from rerankd.api.inputs import MultiModal, QueryInput, count, is_image, to_document, to_documents
from rerankd.api.layers import LayerFields
from rerankd.api.lenient import WordBool
from rerankd.api.vllm import VllmFields
from rerankd.api.voyage import VoyageFields, VoyageResult, render_data
from rerankd.documents import Document, ImageRef, Rendered, TextDocument
from rerankd.service import RerankRequest

router = APIRouter(tags=["rerank"])


class CohereRerankRequest(VoyageFields, VllmFields, LayerFields):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = Field(None, description="Served model name (default: the first).")
    query: QueryInput = Field(description="Text, {'image': ...}, or one content part (vLLM).")
    documents: (
        Annotated[list[Text | JsonObject], Field(json_schema_extra={"minItems": 1})] | MultiModal
    ) = Field(
        description="Strings, or objects: their `text`, or the `rank_fields`, are read; "
        "{'image': base64 or data URL} is an image (Jina); {'content': [parts]} has one "
        "document per text or image_url part (vLLM)."
    )
    rank_fields: list[StrictStr] | None = Field(
        None, description="Cohere v1: the object fields to rank on (see rerankd.api.documents)."
    )
    top_n: StrictInt | None = Field(
        None,
        ge=0,
        description="Best N; 0 (vLLM), or above the document count (Cohere), means all.",
    )
    return_documents: WordBool | None = Field(
        None, description="Include documents (default false)."
    )
    max_tokens_per_doc: StrictInt | None = Field(
        None, ge=1, description="Truncate documents to this many tokens."
    )
    max_chunks_per_doc: StrictInt | None = Field(
        None, ge=1, description="Split long documents into chunks (at most this many)."
    )
    raw_scores: WordBool = Field(False, description="Raw logits instead of sigmoid scores.")
    instruction: StrictStr | None = instruction_field()
    priority: Priority = 0
    min_relevance: MinRelevance = None
    return_spans: WordBool = spans_field()
    max_spans: MaxSpans = None

    def internal_documents(self) -> list[Document]:
        """Text as `rank_fields` renders it; `{"image": ...}` objects and parts as images."""
        if isinstance(self.documents, MultiModal):
            return to_documents(self.documents)
        images = {i: d["image"] for i, d in enumerate(self.documents) if is_image(d)}
        texts = render_all(
            ["" if i in images else d for i, d in enumerate(self.documents)],
            self.rank_fields,
            default_fields="text",
        )
        return [
            ImageRef(images[i]) if i in images else TextDocument(text)
            for i, text in enumerate(texts)
        ]

    def sent(self, index: int, rendered: Rendered) -> JsonObject:
        """A document as Cohere returns it: `{text}` for a string, else the object as sent."""
        if isinstance(self.documents, MultiModal):
            return {"text": rendered} if isinstance(rendered, str) else dict(rendered)
        document = self.documents[index]
        return {"text": document} if isinstance(document, str) else document

    def to_internal(self) -> RerankRequest:
        return RerankRequest(
            query=to_document(self.query),
            documents=self.internal_documents(),
            model=self.model,
            top_n=(self.top_n if self.top_n is not None else self.top_k) or None,
            clamp_top_n=True,
            raw_scores=self.raw(self.raw_scores),
            strategy="chunk" if self.max_chunks_per_doc else None,
            max_tokens_per_doc=self.token_cap(self.max_tokens_per_doc),
            max_chunks_per_doc=self.max_chunks_per_doc,
            truncation_direction=self.truncation_side or "right",
            allow_truncation=self.truncation is not False,
            instruction=self.instruction,
            options=self.family_options(),
            priority=self.priority,
            min_relevance=self.min_relevance,
            return_spans=self.return_spans,
            max_spans=self.max_spans,
        )


class CohereResult(BaseModel):
    index: int
    relevance_score: float
    raw_score: float | None = None
    spans: list[SpanOut] | None = None
    document: dict[str, Any] | None = Field(
        None, description="`{text}`, or the object as it was sent."
    )


class CohereRerankResponse(BaseModel):
    id: str
    object: str = "list"
    model: str
    results: list[CohereResult]
    data: list[VoyageResult]
    meta: dict[str, Any]
    usage: dict[str, Any]
    warnings: list[str] = Field(
        default_factory=list,
        description="Why these scores may be unreliable (also in `meta.warnings`, Cohere's "
        "field, and `Warning` headers); clients that do not know the field ignore it.",
    )


async def rerank(request: Request) -> JSONResponse:
    body = validate(CohereRerankRequest, await read_json(request))
    request.state.documents = count(body.documents)
    result = await state.service(request).rerank(body.to_internal())
    request.state.model = result.model
    request.state.tokens = result.tokens
    request.state.warnings = result.warnings
    return JSONResponse(
        {
            "id": str(uuid.uuid4()),
            "object": "list",
            "model": result.model,
            "results": [
                {
                    "index": r.index,
                    "relevance_score": r.score,
                    **(
                        {"document": body.sent(r.index, r.document)}
                        if body.return_documents
                        else {}
                    ),
                    **result_extras(r),
                }
                for r in result.results
            ],
            "data": render_data(result.results, bool(body.return_documents)),
            "meta": {
                "api_version": {"version": "2"},
                "billed_units": {"search_units": 1},
                "tokens": {"input_tokens": result.tokens, "output_tokens": 0},
                **({"warnings": list(result.warnings)} if result.warnings else {}),
            },
            "usage": {
                "prompt_tokens": result.tokens,
                "total_tokens": result.tokens,
                **usage_extras(result, body.return_spans),
            },
            "warnings": list(result.warnings),
        }
    )


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
