"""vLLM's score API (`POST /score`, `/v1/score`) and vLLM's extra fields on `/v1/rerank`.

vLLM names the two sides of its pairs four ways (`queries`/`documents`, `queries`/`items`,
`data_1`/`data_2` and the original `text_1`/`text_2`); each side is a string or a list of
strings, paired as vLLM pairs them: 1 with N (the one text against each of the others), or N
with N (position by position); any other pair of lengths is an error. `data[i]` is the score
of pair i, in request order (not sorted), as vLLM answers.

Scores are the same as the native route's for the same (query, document) pairs: pairs are
grouped by query, each group is one `RerankRequest`, and the groups share batches.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

from rerankd.api import state
from rerankd.api.body import body_schema, read_json, validate
from rerankd.api.errors import ERROR_RESPONSES
from rerankd.api.fields import Text
from rerankd.api.lenient import WordBool
from rerankd.documents import TextDocument
from rerankd.errors import InvalidInput
from rerankd.service import RerankRequest

router = APIRouter(tags=["rerank"])


class VllmFields(BaseModel):
    """vLLM's request extras, shared by its score requests and `/v1/rerank`."""

    truncate_prompt_tokens: StrictInt | None = Field(
        None,
        ge=-1,
        description="vLLM: -1 means the model's limit. rerankd caps each *document* at this "
        "many tokens (vLLM caps the whole query+document prompt), so with a long query rerankd "
        "reads up to the query's length more of each document.",
    )
    truncation_side: Literal["left", "right"] | None = Field(
        None, description="vLLM: which end of a long document is cut (default right)."
    )
    use_activation: WordBool | None = Field(
        None, description="vLLM: false returns raw logits instead of sigmoid scores."
    )

    @model_validator(mode="after")
    def _no_zero_truncation(self) -> VllmFields:
        if self.truncate_prompt_tokens == 0:
            raise ValueError("truncate_prompt_tokens must be -1 (the model's limit) or at least 1")
        return self

    def token_cap(self, max_tokens_per_doc: int | None) -> int | None:
        """The document token cap from `truncate_prompt_tokens` and an explicit cap."""
        caps = [c for c in (max_tokens_per_doc, self.truncate_prompt_tokens) if c and c > 0]
        return min(caps) if caps else None

    def raw(self, raw_scores: bool) -> bool:
        return raw_scores or self.use_activation is False


Side = Text | Annotated[list[Text], Field(json_schema_extra={"minItems": 1})]

_NAMES = (
    ("queries", "documents"),
    ("queries", "items"),
    ("data_1", "data_2"),
    ("text_1", "text_2"),
)


class ScoreRequest(VllmFields):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = Field(None, description="Served model name (default: the first).")
    queries: Side | None = Field(None, description="The first texts (vLLM's newer name).")
    documents: Side | None = Field(None, description="The second texts, with `queries`.")
    items: Side | None = Field(None, description="The second texts, with `queries`.")
    data_1: Side | None = Field(None, description="The first texts.")
    data_2: Side | None = Field(None, description="The second texts.")
    text_1: Side | None = Field(None, description="The first texts (vLLM's original name).")
    text_2: Side | None = Field(None, description="The second texts.")

    @model_validator(mode="after")
    def _one_naming(self) -> ScoreRequest:
        for first, second in _NAMES:
            if getattr(self, first) is not None and getattr(self, second) is not None:
                return self
        for first, second in _NAMES:
            if getattr(self, first) is not None or getattr(self, second) is not None:
                missing = second if getattr(self, first) is not None else first
                raise ValueError(f"{missing} is missing")
        raise ValueError("send the texts as text_1 and text_2 (or queries and documents)")

    def sides(self) -> tuple[list[str], list[str]]:
        for first, second in _NAMES:
            left, right = getattr(self, first), getattr(self, second)
            if left is not None and right is not None:
                if not left or not right:
                    raise InvalidInput(f"{first if not left else second} is empty")
                return _as_list(left), _as_list(right)
        raise AssertionError("checked by _one_naming")

    def pairs(self) -> list[tuple[str, str]]:
        """vLLM's pairing: 1 with N, or N with N."""
        left, right = self.sides()
        if len(left) == 1:
            left = left * len(right)
        elif len(left) != len(right):
            raise InvalidInput(
                f"cannot pair {len(left)} first texts with {len(right)} second texts: "
                "send one first text, or as many as the second"
            )
        return list(zip(left, right, strict=True))


def _as_list(side: str | list[str]) -> list[str]:
    return [side] if isinstance(side, str) else list(side)


class ScoreData(BaseModel):
    index: int
    object: str = "score"
    score: float


class ScoreUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0
    prompt_tokens_details: None = None


class ScoreResponse(BaseModel):
    id: str
    object: str = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: ScoreUsage


async def score(request: Request) -> JSONResponse:
    body = validate(ScoreRequest, await read_json(request))
    pairs = body.pairs()
    service = state.service(request)
    service.check_document_count(len(pairs))
    request.state.documents = len(pairs)

    groups: dict[str, list[int]] = {}  # query -> pair indexes, in first-seen order
    for index, (query, _) in enumerate(pairs):
        groups.setdefault(query, []).append(index)
    internal = [
        RerankRequest(
            query=TextDocument(query),
            documents=[TextDocument(pairs[i][1]) for i in indexes],
            model=body.model,
            raw_scores=body.raw(False),
            max_tokens_per_doc=body.token_cap(None),
            truncation_direction=body.truncation_side or "right",
        )
        for query, indexes in groups.items()
    ]
    results = await service.rerank_many(internal)
    scores = [0.0] * len(pairs)
    for indexes, result in zip(groups.values(), results, strict=True):
        for ranked in result.results:
            scores[indexes[ranked.index]] = ranked.score
    tokens = sum(r.tokens for r in results)
    request.state.model = results[0].model
    request.state.tokens = tokens
    request.state.warnings = sorted({w for r in results for w in r.warnings})
    return JSONResponse(
        {
            "id": f"score-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": results[0].model,
            "data": [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)],
            "usage": {
                "prompt_tokens": tokens,
                "total_tokens": tokens,
                "completion_tokens": 0,
                "prompt_tokens_details": None,
            },
        }
    )


for _path in ("/score", "/v1/score"):
    router.add_api_route(
        _path,
        score,
        methods=["POST"],
        summary=f"Score text pairs (vLLM, {_path})",
        response_model=ScoreResponse,
        responses=ERROR_RESPONSES,
        openapi_extra=body_schema(ScoreRequest),
        operation_id=f"score_vllm_{_path.strip('/').replace('/', '_')}",
    )
