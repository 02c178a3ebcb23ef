"""Qwen3-VL-Reranker (2B/8B): yes/no at the last token of Qwen3-VL, text and image inputs.

Reproduces the model card's `Qwen3VLReranker.process`: the system turn ("Judge whether the
Document meets the requirements ..."), then one user turn of `<Instruct>: {instruction}`,
`<Query>:` and the query's parts, `\\n<Document>:` and the document's parts (images before
text, as the card orders a multimodal object; an image is `<|vision_start|>`, one
`<|image_pad|>` per merged 2x2 patch group, `<|vision_end|>`), and the assistant prompt. The
whole prompt is tokenized at once, as the card does: Qwen's pre-tokenizer joins ":" to the
word after it, so the pieces cannot be tokenized apart. A prompt longer than `max_length`
is cut the card's way (special tokens kept, the first other tokens up to the budget, the
5-token assistant suffix kept). The score is the last token's hidden state times
(row "yes" − row "no") of the LM head: the card's `score_linear`; sigmoid is the card's score.

Images are resized by the model's image processor to multiples of 32 pixels within the card's
pixel budget (at least 4, at most 1800 merged tokens per image), after rerankd's own decode
limits. An item's cost for the batcher is its tokens plus its image patches.

rerankd runs transformers' `Qwen3VLForConditionalGeneration` (no checkpoint code). Video
inputs are not accepted (rerankd's documents are text or images).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from rerankd.documents import ImageDocument, Loaded, TextDocument
from rerankd.engine.backend import Batch
from rerankd.engine.plan import LongDocPolicy, ScoringPlan
from rerankd.errors import InvalidInput, UnsupportedModel
from rerankd.families.base import PaddingSide, PairFamily, QuerySide, combine_pairs
from rerankd.families.clip import TEXT_AND_IMAGES

if TYPE_CHECKING:
    import torch

    from rerankd.models import ResolvedModel

SYSTEM = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
SUFFIX_TOKENS = 5  # the card keeps the prompt's last 5 tokens whole
FACTOR = 32  # patch 16 x merge 2
MIN_PIXELS = 4 * FACTOR * FACTOR  # the card's MIN_PIXELS (4 tokens)
MAX_PIXELS = 1800 * FACTOR * FACTOR  # the card's MAX_PIXELS (1800 tokens)


@dataclass(frozen=True, slots=True, eq=False)
class VisionSequence:
    """One prompt: its token ids, and its images' patches (in prompt order)."""

    input_ids: list[int]
    pixel_values: np.ndarray  # float32 [patches, channels * temporal * patch * patch]
    grids: np.ndarray  # int64 [images, 3]: (t, h, w) in patches

    def __len__(self) -> int:
        return len(self.input_ids) + int(self.pixel_values.shape[0])


@dataclass(frozen=True)
class VisionBatch:
    arrays: dict[str, np.ndarray]

    def inputs(self, names: list[str]) -> dict[str, np.ndarray]:
        return {name: self.arrays[name] for name in names}


class Qwen3VLReranker(PairFamily):
    name = "qwen3-vl-reranker"
    summary = (
        "Qwen3-VL-Reranker (2B/8B): Qwen3VLForConditionalGeneration, yes/no at the last token; "
        "text or image queries and documents"
    )
    reference = "the Qwen3-VL-Reranker model card's Qwen3VLReranker.process"
    shared_prefix = (
        "not shared: the card tokenizes each whole prompt (images and multimodal rotary "
        "positions included), so every sequence runs whole"
    )
    modalities = TEXT_AND_IMAGES
    takes_instruction = True
    default_instruction = (
        "Given a search query, retrieve relevant candidates that answer the query."
    )
    default_max_length = 10240  # the card's MAX_LENGTH
    padding_side: ClassVar[PaddingSide] = "left"  # as the card pads
    onnx_refusal: ClassVar[str | None] = (
        "its vision tower and multimodal rotary positions are not exported to ONNX"
    )
    int8_refusal: ClassVar[str | None] = "runs in torch only (see onnx_refusal)"

    @classmethod
    def recognizes(cls, model: ResolvedModel) -> bool:
        architectures = model.config.get("architectures") or []
        names = f"{model.source} {model.name} {model.path.name}".lower()
        return "Qwen3VLForConditionalGeneration" in architectures and "rerank" in names

    @classmethod
    def check(cls, model: ResolvedModel) -> None:
        if "Qwen3VLForConditionalGeneration" not in (model.config.get("architectures") or []):
            raise UnsupportedModel(
                f"{model.path} is not a Qwen3VLForConditionalGeneration checkpoint; the "
                f"{cls.name} family reads its LM head"
            )

    @property
    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "image_grid_thw"]

    @functools.cached_property
    def image_processor(self) -> Any:
        from transformers import AutoImageProcessor

        loader: Any = AutoImageProcessor  # untyped in transformers
        return loader.from_pretrained(str(self.model.path))

    @functools.cached_property
    def _vision_tokens(self) -> tuple[int, list[int]]:
        """(the image pad id, every special id the card's truncation keeps)."""
        import json

        pad = self.tokenizer.token_id("<|image_pad|>")
        if pad is None:
            raise UnsupportedModel(f"{self.model.path}: the tokenizer has no <|image_pad|> token")
        state = json.loads((self.model.path / "tokenizer.json").read_text(encoding="utf-8"))
        specials = [int(t["id"]) for t in state.get("added_tokens", []) if t.get("special")]
        return int(pad), specials

    def answer_tokens(self) -> list[int]:
        ids = [self.tokenizer.token_id("yes"), self.tokenizer.token_id("no")]
        if None in ids:
            raise UnsupportedModel(
                f"{self.model.path}: the tokenizer has no single 'yes' and 'no' tokens"
            )
        return [int(i) for i in ids if i is not None]

    def query_side(self, query: str, instruction: str | None) -> QuerySide:
        raise NotImplementedError("planned from typed documents (plan_documents)")

    def plan(
        self, query: str, documents: list[str], policy: LongDocPolicy, instruction: str | None
    ) -> ScoringPlan:
        return self.plan_documents(
            TextDocument(query), [TextDocument(d) for d in documents], policy, instruction
        )

    def plan_documents(
        self,
        query: Loaded,
        documents: list[Loaded],
        policy: LongDocPolicy,
        instruction: str | None,
    ) -> ScoringPlan:
        """One prompt per document (long ones cut the card's way, never chunked)."""
        query_text, query_images = self._part(query)
        head = f"{SYSTEM}<Instruct>: {instruction or self.default_instruction}<Query>:{query_text}"
        items: list[Any] = []
        for index, document in enumerate(documents):
            text, images = self._part(document)
            ids = self.tokenizer.encode([f"{head}\n<Document>:{text}{SUFFIX}"])[0]
            ids = self._fit(ids, policy, index)
            pictures = query_images + images
            pixels = [p for p, _ in pictures]
            items.append(
                VisionSequence(
                    ids,
                    np.concatenate(pixels) if pixels else np.zeros((0, 1), dtype=np.float32),
                    np.asarray([g for _, g in pictures], dtype=np.int64).reshape(-1, 3),
                )
            )
        owners = np.arange(len(documents), dtype=np.int64)
        return ScoringPlan(items, owners, len(documents), combine_pairs)

    def _part(self, document: Loaded) -> tuple[str, list[tuple[np.ndarray, np.ndarray]]]:
        """A query's or document's text in the prompt, and its image's patches and grid."""
        if isinstance(document, TextDocument):
            return document.text, []
        if not isinstance(document, ImageDocument) or document.pixels is None:
            raise InvalidInput("an image was not decoded before planning")  # pragma: no cover
        processed = self.image_processor(
            images=[document.pixels.convert("RGB")],
            size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
            return_tensors="np",
        )
        grid = np.asarray(processed["image_grid_thw"][0], dtype=np.int64)
        merge = int(getattr(self.image_processor, "merge_size", 2))
        count = int(grid.prod()) // (merge * merge)
        marker = "<|vision_start|>" + "<|image_pad|>" * count + "<|vision_end|>"
        pixels = np.asarray(processed["pixel_values"], dtype=np.float32)
        return marker, [(pixels, grid)]

    def _fit(self, ids: list[int], policy: LongDocPolicy, index: int) -> list[int]:
        """The card's truncation: keep special tokens and the first others up to the budget."""
        budget = self.limits.max_length
        if len(ids) <= budget:
            return ids
        if not policy.allow_truncation:
            raise InvalidInput(
                f"document {index} makes a prompt of {len(ids)} tokens, more than the "
                f"{budget} allowed; shorten it or allow truncation"
            )
        _, specials = self._vision_tokens
        special = set(specials)
        body, tail = ids[:-SUFFIX_TOKENS], ids[-SUFFIX_TOKENS:]
        keep = budget - sum(1 for t in body if t in special)
        kept: list[int] = []
        for token in body:
            if token in special:
                kept.append(token)
            elif keep > 0:
                kept.append(token)
                keep -= 1
        return kept + tail

    def run(self, backend_run: Callable[[Batch], np.ndarray], items: list[Any]) -> np.ndarray:
        longest = max(len(item.input_ids) for item in items)
        input_ids = np.full((len(items), longest), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(items), longest), dtype=np.int64)
        for row, item in enumerate(items):
            input_ids[row, longest - len(item.input_ids) :] = item.input_ids
            attention_mask[row, longest - len(item.input_ids) :] = 1
        with_images = [item for item in items if item.grids.shape[0]]
        if with_images:
            pixel_values = np.concatenate([item.pixel_values for item in with_images])
            grids = np.concatenate([item.grids for item in with_images])
        else:
            pixel_values = np.zeros((0, 1), dtype=np.float32)
            grids = np.zeros((0, 3), dtype=np.int64)
        arrays = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": pixel_values,
            "image_grid_thw": grids,
        }
        return backend_run(VisionBatch(arrays))

    def torch_head(self, dtype: torch.dtype, attention: str) -> torch.nn.Module:
        from transformers import Qwen3VLForConditionalGeneration

        from rerankd.families.heads import load_pretrained
        from rerankd.families.qwen3_vl_head import Qwen3VLYesNoHead

        model = load_pretrained(Qwen3VLForConditionalGeneration, self.model, dtype, attention)
        yes, no = self.answer_tokens()
        image_token = int(self.model.config.get("image_token_id", self._vision_tokens[0]))
        return Qwen3VLYesNoHead(model, yes, no, image_token).eval()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "modalities": sorted(self.modalities.documents)}
