"""CLIP (`CLIPModel`): a text tower and an image tower embedding into one space.

Reproduces transformers' `CLIPModel.get_text_features` / `get_image_features` (the model's
own tokenizer template and image processor), L2-normalised; the raw score is their cosine and
the relevance is (cosine + 1) / 2, as for the built-in text bi-encoder. Queries and documents
may each be text or an image. A plan's items are token sequences or `ImageItem`s (an image
preprocessed to pixel values, whose `len()` is its patch count, so the batcher's token budget
bounds a batch of images as it bounds a batch of texts); `run` sends each kind through its
tower. The towers run in torch (no ONNX export yet).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rerankd.documents import ImageDocument, Loaded, Modalities, TextDocument
from rerankd.engine.backend import Batch, PaddedBatch
from rerankd.engine.plan import LongDocPolicy, ScoringPlan, windows
from rerankd.engine.tokenize import Sequence
from rerankd.families.base import EmbeddingFamily

if TYPE_CHECKING:
    import torch

    from rerankd.models import ResolvedModel

TEXT_AND_IMAGES = Modalities(
    query=frozenset({"text", "image"}), documents=frozenset({"text", "image"})
)


@dataclass(frozen=True, slots=True, eq=False)
class ImageItem:
    """One image, preprocessed: float32 pixel values [3, H, W]; its cost is its patches."""

    pixel_values: np.ndarray
    patches: int

    def __len__(self) -> int:
        return self.patches


@dataclass(frozen=True, slots=True)
class PixelBatch:
    """A batch of images for the image tower."""

    pixel_values: np.ndarray  # float32 [batch, 3, H, W]

    def inputs(self, names: list[str]) -> dict[str, np.ndarray]:
        return {"pixel_values": self.pixel_values}


class Clip(EmbeddingFamily):
    name = "clip"
    summary = "CLIP (CLIPModel): text and image towers, cosine; text or image queries and documents"
    reference = "transformers CLIPModel.get_text_features / get_image_features, cosine"
    modalities = TEXT_AND_IMAGES
    default_max_length = 77
    onnx_refusal = "its text and image towers are not exported to ONNX yet"
    architecture: ClassVar[str] = "CLIPModel"
    class_token: ClassVar[int] = 1  # CLIP's vision tower adds a class token to the patches

    @classmethod
    def recognizes(cls, model: ResolvedModel) -> bool:
        return cls.architecture in (model.config.get("architectures") or [])

    @property
    def uses_type_ids(self) -> bool:
        return False

    @functools.cached_property
    def text_length(self) -> int:
        """The longest text sequence: the family's limit, within the text tower's positions."""
        positions = int(self.model.config.get("text_config", {}).get("max_position_embeddings", 77))
        return min(self.limits.max_length, positions)

    @functools.cached_property
    def patches(self) -> int:
        vision = self.model.config.get("vision_config", {})
        side = int(vision.get("image_size", 224)) // int(vision.get("patch_size", 32))
        return side * side + self.class_token

    @functools.cached_property
    def image_processor(self) -> Any:
        from transformers import AutoImageProcessor

        loader: Any = AutoImageProcessor  # untyped in transformers
        return loader.from_pretrained(str(self.model.path))

    def image_item(self, image: ImageDocument) -> ImageItem:
        pixels = self.image_processor(images=[image.pixels], return_tensors="np")["pixel_values"]
        return ImageItem(np.asarray(pixels[0], dtype=np.float32), self.patches)

    def text_item(self, window: list[int]) -> Sequence:
        return self.tokenizer.single(window)

    def plan_documents(
        self,
        query: Loaded,
        documents: list[Loaded],
        policy: LongDocPolicy,
        instruction: str | None,
    ) -> ScoringPlan:
        """The query first (owner -1), then each document: its text windows, or its image."""
        everything = [query, *documents]
        texts = [d.text for d in everything if isinstance(d, TextDocument)]
        encoded = iter(self.tokenizer.encode(texts) if texts else [])
        room = self.text_length - self.tokenizer.single_specials
        document_room = min(room, policy.max_tokens_per_doc or room)
        items: list[Any] = []
        owners: list[int] = []
        for owner, document in enumerate(everything, start=-1):
            made: list[Any]
            if isinstance(document, TextDocument):
                ids = next(encoded)
                cuts = [ids[:room]] if owner < 0 else windows(ids, document_room, policy, owner)
                made = [self.text_item(window) for window in cuts]
            else:
                made = [self.image_item(document)]
            items.extend(made)
            owners.extend([owner] * len(made))
        return ScoringPlan(
            items, np.asarray(owners, dtype=np.int64), len(documents), self.combine_rows
        )

    def run(self, backend_run: Callable[[Batch], np.ndarray], items: list[Any]) -> np.ndarray:
        """Texts through the text tower, images through the image tower; rows in item order."""
        texts = [i for i, item in enumerate(items) if isinstance(item, Sequence)]
        images = [i for i, item in enumerate(items) if isinstance(item, ImageItem)]
        parts: list[tuple[list[int], np.ndarray]] = []
        if texts:
            batch = PaddedBatch.pad([items[i] for i in texts], self.pad_id, "right")
            parts.append((texts, backend_run(batch)))
        if images:
            pixels = np.stack([items[i].pixel_values for i in images])
            parts.append((images, backend_run(PixelBatch(pixels))))
        width = parts[0][1].shape[1]
        outputs = np.empty((len(items), width), dtype=np.float32)
        for rows, values in parts:
            outputs[rows] = values
        return outputs

    def torch_head(self, dtype: torch.dtype, attention: str) -> torch.nn.Module:
        from transformers import AutoModel

        from rerankd.families.heads import DualTowerHead, load_pretrained

        model = load_pretrained(AutoModel, self.model, dtype, attention)
        return DualTowerHead(model, text_mask=True).eval()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "modalities": sorted(self.modalities.documents)}


def special_id(path: Any, name: str, fallback: int) -> int:
    """The id of a special token the tokenizer config names (e.g. its pad token)."""
    from tokenizers import Tokenizer

    config = path / "tokenizer_config.json"
    if not config.is_file():
        return fallback
    token = json.loads(config.read_text(encoding="utf-8")).get(name)
    if isinstance(token, dict):
        token = token.get("content")
    if not isinstance(token, str):
        return fallback
    found = Tokenizer.from_file(str(path / "tokenizer.json")).token_to_id(token)
    return fallback if found is None else int(found)
