"""Documents sent as JSON objects, and the one way rerankd turns an object into the text a
model reads (Cohere v1's and Mixedbread's `rank_fields`).

The rendering, the same on every route that takes objects:

- A string document is read as it is.
- An object is read through its *ranked fields*: the names in `rank_fields`, in that order,
  that the object has. Without `rank_fields`, Cohere's routes rank the `text` field (as
  Cohere does) and Mixedbread's route ranks every field, in the object's own order.
- A name may reach into nested objects with dots (`meta.title`) when the object has no field
  of that exact name.
- One ranked field: its value alone, so `rank_fields: ["body"]` scores exactly what sending the
  body as a plain string would. Several: one `name: value` line per field, joined by newlines.
- A string value is used as it is; any other value (a number, a list, an object) is written
  as compact JSON.
- An object with none of the ranked fields is refused (422), naming the document.

Responses give each document back as it was sent: the original object, not the rendering.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rerankd.api.body import SchemaMismatch

JsonObject = dict[str, Any]
_MISSING = object()


def _lookup(document: JsonObject, name: str) -> Any:
    if name in document:
        return document[name]
    value: Any = document
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def render(document: str | JsonObject, fields: Sequence[str] | None, index: int) -> str:
    """The text the model reads for one document. `fields=None` ranks every field."""
    if isinstance(document, str):
        return document
    names = list(document) if fields is None else list(fields)
    found = [(name, value) for name in names if (value := _lookup(document, name)) is not _MISSING]
    if not found:
        wanted = ", ".join(repr(n) for n in names) or "(the object is empty)"
        raise SchemaMismatch(f"documents[{index}] has none of the fields to rank: {wanted}")
    if len(found) == 1:
        return _as_text(found[0][1])
    return "\n".join(f"{name}: {_as_text(value)}" for name, value in found)


def render_all(
    documents: Sequence[str | JsonObject], fields: Sequence[str] | None, default_fields: str
) -> list[str]:
    """Render every document. `default_fields` applies when `fields` is None: `"text"` ranks
    only the `text` field (Cohere), `"all"` ranks every field (Mixedbread)."""
    if fields is None and default_fields == "text":
        fields = ["text"]
    if fields is not None and not fields:
        raise SchemaMismatch("rank_fields is empty: name at least one field, or leave it out")
    return [render(document, fields, index) for index, document in enumerate(documents)]
