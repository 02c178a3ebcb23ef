"""Qwen3-VL-Reranker equals its model card's code on a tiny Qwen3-VL, with texts and images.

The reference below is the card's `Qwen3VLReranker` (QwenLM's qwen3_vl_reranker.py) written
out: the same messages (`format_mm_instruction` / `format_mm_content`), the chat template, the
truncation that keeps special tokens and the 5-token suffix, one pair per forward pass, the
last position's hidden state times (yes − no), sigmoid. Two parts are spelled out because
they cannot run here: `qwen_vl_utils.process_vision_info` (it only resizes each image to
multiples of 32 within the pixel budget; the test images already are, so it would leave them
as they are) and `Qwen3VLProcessor.__call__` (transformers' processor needs a video processor,
which needs torchvision): the image processor with `do_resize=False`, each `<|image_pad|>`
repeated once per merged patch group, the tokenizer, and `mm_token_type_ids`, as the
processor computes them.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from rerankd import Reranker
from rerankd.devtools.synthetic_qwen3_vl import CHAT_TEMPLATE
from rerankd.documents import Document, ImageRef, TextDocument
from rerankd.errors import UnsupportedModel
from tests.imaging import picture

INSTRUCTION = "Find the picture or passage the question is about"
DEFAULT = "Given a search query, retrieve relevant candidates that answer the query."


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def qwen3_vl_reranker(model_root: Path) -> Path:
    from rerankd.devtools.synthetic_qwen3_vl import build_qwen3_vl_reranker

    return build_qwen3_vl_reranker(model_root / "tiny-qwen3-vl-reranker")


def png(seed: int, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    picture(seed, size).save(buffer, "PNG")
    return buffer.getvalue()


# The card's code, written out ------------------------------------------------------------


class CardReranker:
    def __init__(self, path: Path, max_length: int = 10240) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoTokenizer, Qwen3VLForConditionalGeneration

        lm = Qwen3VLForConditionalGeneration.from_pretrained(str(path)).eval()
        self.model = lm.model
        self.config = lm.config
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
        self.image_processor = AutoImageProcessor.from_pretrained(str(path))
        self.max_length = max_length
        vocab = self.tokenizer.get_vocab()
        weight = lm.lm_head.weight.data
        self.score_linear = torch.nn.Linear(weight.shape[1], 1, bias=False)
        with torch.no_grad():
            self.score_linear.weight[0] = weight[vocab["yes"]] - weight[vocab["no"]]

    @staticmethod
    def format_mm_content(text: str | None, image: Image.Image | None, prefix: str) -> list[Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": prefix}]
        if text is None and image is None:
            content.append({"type": "text", "text": "NULL"})
            return content
        if image is not None:
            content.append({"type": "image", "image": image})
        if text is not None:
            content.append({"type": "text", "text": text})
        return content

    def format_mm_instruction(
        self, query: tuple[str | None, Any], doc: tuple[str | None, Any], instruction: str | None
    ) -> list[dict[str, Any]]:
        system = (
            "Judge whether the Document meets the requirements based on the Query and the "
            'Instruct provided. Note that the answer can only be "yes" or "no".'
        )
        contents = [{"type": "text", "text": "<Instruct>: " + (instruction or DEFAULT)}]
        contents += self.format_mm_content(*query, prefix="<Query>:")
        contents += self.format_mm_content(*doc, prefix="\n<Document>:")
        return [
            {"role": "system", "content": [{"type": "text", "text": system}]},
            {"role": "user", "content": contents},
        ]

    def tokenize(self, pair: list[dict[str, Any]]) -> dict[str, Any]:

        text = self.tokenizer.apply_chat_template(
            pair, chat_template=CHAT_TEMPLATE, tokenize=False, add_generation_prompt=True
        )
        images = [c["image"] for m in pair for c in m["content"] if c["type"] == "image"]
        inputs: dict[str, Any] = {}
        if images:  # the processor: images, then one pad token per merged patch group
            vision = self.image_processor(images=images, do_resize=False, return_tensors="pt")
            inputs.update(vision)
            merge = self.image_processor.merge_size**2
            pieces = text.split("<|image_pad|>")
            text = pieces[0]
            for grid, piece in zip(vision["image_grid_thw"], pieces[1:], strict=True):
                text += "<|image_pad|>" * (int(grid.prod()) // merge) + piece
        ids = self.tokenizer(text, truncation=False, padding=False)["input_ids"]
        specials = set(self.tokenizer.all_special_ids) | {
            self.tokenizer.convert_tokens_to_ids(t)
            for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|im_start|>")
        }
        body, tail = ids[:-5], ids[-5:]
        if len(body) > self.max_length:  # truncate_tokens_optimized
            keep = self.max_length - sum(1 for t in body if t in specials)
            kept = []
            for token in body:
                if token in specials:
                    kept.append(token)
                elif keep > 0:
                    kept.append(token)
                    keep -= 1
            body = kept
        padded = self.tokenizer.pad({"input_ids": [body + tail]}, padding=True, return_tensors="pt")
        inputs.update(padded)
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == self.config.image_token_id).long()
        return inputs

    def process(
        self,
        query: tuple[str | None, Any],
        docs: list[tuple[str | None, Any]],
        instruction: str | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        raw, scores = [], []
        with torch.no_grad():
            for doc in docs:
                inputs = self.tokenize(self.format_mm_instruction(query, doc, instruction))
                hidden = self.model(**inputs).last_hidden_state[:, -1]
                logit = self.score_linear(hidden)
                raw.append(float(logit[0, 0]))
                scores.append(float(torch.sigmoid(logit)[0, 0]))
        return np.array(raw), np.array(scores)


@pytest.fixture(scope="module")
def card(qwen3_vl_reranker: Path) -> CardReranker:
    return CardReranker(qwen3_vl_reranker)


SIZES = [(64, 64), (96, 64), (64, 128), (128, 96)]  # multiples of 32, within the card's budget


def documents() -> list[tuple[str | None, bytes | None]]:
    texts = [
        "Paris is the capital of France.",
        "A red square on a blue background, drawn by hand.",
        "苹果手机 🙂 the titanium phone",
        "the yellow circle",
    ]
    out: list[tuple[str | None, bytes | None]] = [(t, None) for t in texts]
    out += [(None, png(seed, size)) for seed, size in enumerate(SIZES)]
    return out


def as_card(item: tuple[str | None, bytes | None]) -> tuple[str | None, Any]:
    text, data = item
    return text, None if data is None else Image.open(io.BytesIO(data)).convert("RGB")


def as_rerankd(item: tuple[str | None, bytes | None]) -> Document:
    text, data = item
    if data is None:
        return TextDocument(str(text))
    return ImageRef(base64.b64encode(data).decode())


@pytest.mark.parametrize("instruction", [None, INSTRUCTION])
def test_text_query_over_texts_and_images_equals_the_card(
    qwen3_vl_reranker: Path, card: CardReranker, instruction: str | None
) -> None:
    query = ("what is drawn in red", None)
    docs = documents()
    expected_raw, expected = card.process(as_card(query), [as_card(d) for d in docs], instruction)
    reranker = Reranker(qwen3_vl_reranker, threads=1)
    assert reranker.engine.family.name == "qwen3-vl-reranker"
    pairs = [(as_rerankd(query), as_rerankd(d)) for d in docs]
    raw = reranker.score(pairs, raw=True, instruction=instruction)
    assert np.abs(raw - expected_raw).max() < 1e-5
    assert np.abs(reranker.score(pairs, instruction=instruction) - expected).max() < 1e-5
    assert len(set(np.round(raw, 9))) == len(set(np.round(expected_raw, 9))) == len(docs)
    assert np.std(expected) > 0.01


def test_a_batch_of_texts_alone_equals_the_card(
    qwen3_vl_reranker: Path, card: CardReranker
) -> None:
    """No image in the batch: the decoder's text-only positions, left-padded rows."""
    docs: list[tuple[str | None, Any]] = [
        ("short", None),
        ("a much longer document about the apple phone and titanium " * 5, None),
        ("mid length text here", None),
    ]
    expected_raw, _ = card.process(("what phone", None), docs, None)
    reranker = Reranker(qwen3_vl_reranker, threads=1)
    raw = reranker.score([("what phone", str(text)) for text, _ in docs], raw=True)
    assert np.abs(raw - expected_raw).max() < 1e-5


def test_image_query_equals_the_card(qwen3_vl_reranker: Path, card: CardReranker) -> None:
    query = (None, png(7, (96, 96)))
    docs = documents()
    expected_raw, _ = card.process(as_card(query), [as_card(d) for d in docs], None)
    reranker = Reranker(qwen3_vl_reranker, threads=1)
    raw = reranker.score([(as_rerankd(query), as_rerankd(d)) for d in docs], raw=True)
    assert np.abs(raw - expected_raw).max() < 1e-5


def test_long_prompts_are_cut_the_card_way(qwen3_vl_reranker: Path) -> None:
    card = CardReranker(qwen3_vl_reranker, max_length=96)
    query = ("apple phone", None)
    docs = [("titanium apple phone and more words " * 40, None), (None, png(3, (64, 64)))]
    docs.append(("a picture and a long caption " * 30, None))
    expected_raw, _ = card.process(as_card(query), [as_card(d) for d in docs], None)
    reranker = Reranker(qwen3_vl_reranker, threads=1, max_length=96)
    raw = reranker.score([(as_rerankd(query), as_rerankd(d)) for d in docs], raw=True)
    assert np.abs(raw - expected_raw).max() < 1e-5


def test_onnx_is_refused_with_the_reason(qwen3_vl_reranker: Path) -> None:
    with pytest.raises(UnsupportedModel, match="not exported"):
        Reranker(qwen3_vl_reranker, threads=1, backend="onnx")


def test_images_are_held_to_the_card_pixel_budget(qwen3_vl_reranker: Path) -> None:
    from rerankd.documents import ImageDocument

    family: Any = Reranker(qwen3_vl_reranker, threads=1).engine.family
    big = picture(1, (2600, 2200))  # 5.7 MP: ~5590 merged tokens unless resized
    small = picture(2, (20, 20))  # below the 4-token floor
    counts = []
    for image in (big, small):
        document = ImageDocument.from_bytes(b"x").with_pixels(image)
        marker, [(pixels, grid)] = family._part(document)
        tokens = marker.count("<|image_pad|>")
        assert tokens == int(grid.prod()) // 4 and pixels.shape[0] == int(grid.prod())
        counts.append(tokens)
    assert counts[0] <= 1800 and counts[1] >= 4


@pytest.fixture(scope="module")
def server(qwen3_vl_reranker: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.server import run_server

    args = ["--model", f"{qwen3_vl_reranker}=vl"]
    with run_server(args, log_dir=tmp_path_factory.mktemp("qwen3-vl")) as running:
        yield running


def test_routes_rank_text_and_image_documents(server: Any, qwen3_vl_reranker: Path) -> None:
    docs = documents()[2:6]  # two texts, two images
    expected = Reranker(qwen3_vl_reranker, threads=1).score(
        [(TextDocument("what is drawn in red"), as_rerankd(d)) for d in docs], raw=True
    )
    sent = [
        text if data is None else {"image": base64.b64encode(data).decode()} for text, data in docs
    ]
    with server.client() as client:
        native = client.post(
            "/rerank", json={"query": "what is drawn in red", "documents": sent, "raw_scores": True}
        )
        assert native.status_code == 200, native.text
        got = {r["index"]: r["score"] for r in native.json()["results"]}
        assert np.abs(np.array([got[i] for i in range(len(docs))]) - expected).max() < 1e-5
        assert native.json()["usage"]["tokens"] > 0
        # An image query, on the Cohere-style route.
        image_query = {"image": base64.b64encode(png(9, (64, 64))).decode()}
        cohere = client.post("/v1/rerank", json={"query": image_query, "documents": sent})
        assert cohere.status_code == 200, cohere.text
        assert len(cohere.json()["results"]) == len(docs)
        # Not an image: a 400 naming the document, nothing else lost.
        bad = client.post("/rerank", json={"query": "q", "documents": [{"image": "bm90IGFu"}]})
        assert bad.status_code in (400, 413, 422), bad.text
