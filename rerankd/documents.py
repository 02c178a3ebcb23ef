"""Documents as the service sees them: text or an image, each with a content hash.

The API dialects and the in-process `Reranker` turn what they receive (strings, `{"text"}`,
`{"image"}`, content parts) into these types once, at the edge; limits, dedup, cache keys,
ranking and rendering read them. An image arrives as an `ImageRef` (base64, a data URL or a
remote URL, as sent) and `rerankd.images` loads it into an `ImageDocument` (its bytes and
their hash) and decodes it off the event loop, only when the model has to see its pixels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar, Literal

from rerankd.errors import InvalidInput

if TYPE_CHECKING:
    from PIL.Image import Image

Kind = Literal["text", "image"]
Rendered = str | dict[str, str]  # what a response gives back: the text, or {"image": source}


def content_hash(kind: str, payload: bytes) -> str:
    """The identity of a document's content: cache keys and dedup use it, never the raw text."""
    return hashlib.blake2b(kind.encode() + b"\0" + payload, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class TextDocument:
    text: str
    kind: ClassVar[Kind] = "text"

    @property
    def digest(self) -> str:
        return content_hash("text", self.text.encode("utf-8"))

    def render(self) -> Rendered:
        return self.text


@dataclass(frozen=True, slots=True)
class ImageRef:
    """An image as the client sent it (base64, a data URL, or an http(s) URL), not loaded yet."""

    source: str
    kind: ClassVar[Kind] = "image"

    def render(self) -> Rendered:
        return {"image": self.source}


@dataclass(frozen=True, slots=True, eq=False)
class ImageDocument:
    """An image's encoded bytes, with their hash; `pixels` is set once it has been decoded."""

    source: str
    data: bytes
    digest: str
    pixels: Image | None = None
    kind: ClassVar[Kind] = "image"

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "") -> ImageDocument:
        return cls(source=source, data=data, digest=content_hash("image", data))

    def with_pixels(self, pixels: Image) -> ImageDocument:
        return replace(self, pixels=pixels)

    def render(self) -> Rendered:
        return {"image": self.source}


Document = TextDocument | ImageRef | ImageDocument
Loaded = TextDocument | ImageDocument  # after `rerankd.images.load`: every image has its bytes


def as_document(value: object, where: str) -> Document:
    """A plain string is a text document; documents pass through; anything else is an error."""
    if isinstance(value, str):
        document: Document = TextDocument(value)
    elif isinstance(value, (TextDocument, ImageRef, ImageDocument)):
        document = value
    else:
        raise InvalidInput(f"{where} must be a string or a document, not {type(value).__name__}")
    if isinstance(document, TextDocument) and not document.text.strip():
        raise InvalidInput(
            f"{where} is empty" + ("" if where == "query" else " or whitespace only")
        )
    if isinstance(document, TextDocument):
        check_encodable(document.text, where)
    if isinstance(document, ImageRef) and not document.source.strip():
        raise InvalidInput(f"{where} is an empty image")
    return document


def check_encodable(text: str, name: str) -> None:
    """JSON can carry lone surrogates (`"\\ud800"`); no tokenizer or cache key can take them."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"{name} is not valid Unicode: a lone surrogate (U+{ord(text[exc.start]):04X}) "
            f"at character {exc.start}"
        ) from None


def check_documents(query: object, documents: object) -> tuple[Document, list[Document]]:
    """Reject what no model can score, with a message that says which input is wrong."""
    checked_query = as_document(query, "query")
    if isinstance(documents, str) or not isinstance(documents, (list, tuple)):
        raise InvalidInput(f"documents must be a list, not {type(documents).__name__}")
    if not documents:
        raise InvalidInput("documents is empty: send at least one document")
    return checked_query, [as_document(d, f"documents[{i}]") for i, d in enumerate(documents)]


@dataclass(frozen=True)
class Modalities:
    """What a model can read: as the query, and as documents."""

    query: frozenset[Kind] = frozenset({"text"})
    documents: frozenset[Kind] = frozenset({"text"})


TEXT_ONLY = Modalities()


def check_modalities(
    model: str, accepts: Modalities, query: Document, documents: list[Document]
) -> None:
    """A 400 that names the model when a request sends it something it cannot read."""
    if query.kind not in accepts.query:
        raise InvalidInput(
            f"model {model!r} cannot read an {query.kind} query; it takes "
            f"{' or '.join(sorted(accepts.query))} queries"
        )
    for index, document in enumerate(documents):
        if document.kind not in accepts.documents:
            raise InvalidInput(
                f"documents[{index}] is an {document.kind}, but model {model!r} reads "
                f"{' and '.join(sorted(accepts.documents))} documents only"
            )
