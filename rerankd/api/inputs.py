"""The shapes a query or a document may take on the wire, and their conversion to documents.

- a string: text;
- `{"text": ...}` (Cohere, Jina) and `{"image": "<base64, data URL or URL>"}` (Jina);
- OpenAI / vLLM content parts: `{"content": [{"type": "text", "text": ...},
  {"type": "image_url", "image_url": {"url": ...}}]}`. As vLLM's `documents`, each part is one
  document; as a query, exactly one part.

Every dialect converts here, once; the service sees only `rerankd.documents` types.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from rerankd.api.fields import Text
from rerankd.documents import Document, ImageRef, Rendered, TextDocument
from rerankd.errors import InvalidInput


class TextInput(BaseModel):
    model_config = ConfigDict(extra="allow")  # Cohere v1 documents may carry other fields

    text: Text


class ImageInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: StrictStr = Field(
        description="Base64, a data URL (data:image/png;base64,...), or a URL."
    )


class ImageUrl(BaseModel):
    url: StrictStr


class ImageUrlPart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageUrl | StrictStr


class TextPart(BaseModel):
    type: Literal["text"]
    text: Text


ContentPart = Annotated[TextPart | ImageUrlPart, Field(discriminator="type")]


class MultiModal(BaseModel):
    """vLLM's `ScoreMultiModalParam`: OpenAI content parts."""

    content: list[ContentPart] = Field(min_length=1)


DocumentInput = Text | TextInput | ImageInput
QueryInput = Text | ImageInput | MultiModal
DocumentsInput = Annotated[list[DocumentInput], Field(json_schema_extra={"minItems": 1})]


def _from_part(part: TextPart | ImageUrlPart) -> Document:
    if isinstance(part, TextPart):
        return TextDocument(part.text)
    url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
    return ImageRef(url)


def to_document(value: DocumentInput | MultiModal) -> Document:
    if isinstance(value, str):
        return TextDocument(value)
    if isinstance(value, TextInput):
        return TextDocument(value.text)
    if isinstance(value, ImageInput):
        return ImageRef(value.image)
    if len(value.content) != 1:
        raise InvalidInput(f"a query takes one content part, not {len(value.content)}")
    return _from_part(value.content[0])


def to_documents(values: list[DocumentInput] | MultiModal) -> list[Document]:
    if isinstance(values, MultiModal):
        return [_from_part(part) for part in values.content]
    return [to_document(value) for value in values]


def is_image(value: object) -> TypeGuard[dict[str, str]]:
    """Jina's image document: an object whose only field is a string `image`."""
    return isinstance(value, dict) and set(value) == {"image"} and isinstance(value["image"], str)


def count(values: Sequence[object] | MultiModal) -> int:
    return len(values.content) if isinstance(values, MultiModal) else len(values)


def echo(value: QueryInput) -> Rendered:
    """The query as a response gives it back: its text, or `{"image": source}`."""
    return to_document(value).render()
