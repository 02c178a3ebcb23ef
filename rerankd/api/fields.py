"""Field types shared by the dialects' schemas.

The JSON schema says what the service accepts (a non-blank query, at least one non-blank
document, top_n of at least 1) so that generated clients and fuzzers know; the checks
themselves live in the service, which answers with a 400 that names the offending input.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictInt, StrictStr, WithJsonSchema

NonBlank = {"type": "string", "minLength": 1, "pattern": r"\S"}

Text = Annotated[StrictStr, WithJsonSchema(NonBlank)]
Texts = Annotated[list[Text], Field(json_schema_extra={"minItems": 1})]
TopN = Annotated[
    StrictInt | None,
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]}),
]
Priority = Annotated[
    StrictInt,
    Field(
        ge=-(2**31),
        le=2**31 - 1,
        description="Scheduling priority: lower runs earlier (as vLLM); default 0. Among equal "
        "priorities, requests with fewer tokens left run first.",
    ),
]
