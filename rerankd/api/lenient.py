"""Leniency that real integrations need, opted into per route and field, never by default.

Each type here accepts one documented extra spelling that a named client really sends, and
nothing that could silently change a result: a top_n of "many" or a boolean of "yes" stays a
422. Routes that no such client calls keep pydantic's strict types.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, StrictBool, WithJsonSchema

_BOOL_WORDS = {"true": True, "false": False}


def _bool_from_word(value: Any) -> Any:
    """`"true"` / `"false"` (any case) as booleans; anything else goes on to strict checking."""
    if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        return _BOOL_WORDS[value.strip().lower()]
    return value


# RAGFlow's Xinference reranker posts `"return_documents": "true"` and `"return_len": "true"`.
WordBool = Annotated[
    StrictBool,
    BeforeValidator(_bool_from_word),
    WithJsonSchema({"anyOf": [{"type": "boolean"}, {"enum": ["true", "false"]}]}),
]
