"""Field types shared by the dialects' schemas.

The JSON schema says what the service accepts (a non-blank query, at least one non-blank
document, top_n of at least 1) so that generated clients and fuzzers know; the checks
themselves live in the service, which answers with a 400 that names the offending input.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, Field, StrictInt, StrictStr, WithJsonSchema

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
