"""Field types shared by the dialects' schemas.

The JSON schema says what the service accepts (a non-blank query, at least one non-blank
document, top_n of at least 1) so that generated clients and fuzzers know; the checks
themselves live in the service, which answers with a 400 that names the offending input.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, Field, Strict, StrictInt, StrictStr, WithJsonSchema

NonBlank = {"type": "string", "minLength": 1, "pattern": r"\S"}

Text = Annotated[StrictStr, WithJsonSchema(NonBlank)]
Texts = Annotated[list[Text], Field(json_schema_extra={"minItems": 1})]
TopN = Annotated[
    StrictInt | None,
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]}),
]


def instruction_field() -> Any:
    """The per-request instruction (vLLM's `instruction`; SGLang's `instruct` is an alias)."""
    return Field(
        None,
        validation_alias=AliasChoices("instruction", "instruct"),
        description="Task instruction for models that take one (Qwen3-Reranker, "
        "bge-reranker-v2-gemma); default: the model's. A model that takes none answers 400.",
    )


Priority = Annotated[
    StrictInt,
    Field(
        ge=-(2**31),
        le=2**31 - 1,
        description="Scheduling priority: lower runs earlier (as vLLM); default 0. Among equal "
        "priorities, requests with fewer tokens left run first.",
    ),
]

MinRelevance = Annotated[
    Annotated[float, Strict()] | None,
    Field(
        None,
        allow_inf_nan=False,
        description="rerankd extension: drop documents whose relevance_score is below this "
        "(after ranking; top_n applies after it). With a calibration attached, a probability.",
    ),
]
MaxSpans = Annotated[
    StrictInt | None,
    Field(None, ge=1, description="Spans per document, at most (default: the server's limit)."),
]


def spans_field() -> Any:
    return Field(
        False,
        description="rerankd extension: each result carries `spans`, the best sentence-aligned "
        "windows of its document as [start, end) character offsets (Unicode code points) with "
        "their scores, found with the model itself; their tokens count in usage.",
    )
