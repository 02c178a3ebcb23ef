"""Tokenization with the `tokenizers` fast tokenizer, pair truncation done the reference way.

Texts are encoded once without special tokens; pairs and chunks are then assembled from the
token ids with the model's own post-processor. That is exactly what a fast tokenizer does for
`tokenizer(query, document, truncation="only_second")`, and it lets a long document be cut
into windows without tokenizing it again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tokenizers import Tokenizer

# Characters kept per token a document may still use, before tokenizing. Subword tokenizers
# average 2-5 characters a token on prose, code and URLs; 32 leaves room for long unknown
# words (WordPiece maps up to 100 characters to one [UNK]) and whitespace runs. Text beyond
# it could never reach the model, so it is dropped before paying for its tokenization: a
# 200,000-character document sent to a 512-token model costs 16,384 characters' work, not
# 200,000. Only text averaging more than 32 characters a token is cut earlier than the token
# truncation would cut it.
CHARS_PER_TOKEN_BOUND = 32


def cut_text(text: str, tokens: int, direction: Literal["right", "left"] = "right") -> str:
    """`text` without the characters that `tokens` tokens could never reach.

    `direction` is the end that is cut, as for the token truncation that follows: "right"
    keeps the start, "left" keeps the end.
    """
    limit = tokens * CHARS_PER_TOKEN_BOUND
    if len(text) <= limit:
        return text
    return text[:limit] if direction == "right" else text[-limit:]


@dataclass(frozen=True, slots=True)
class Sequence:
    """One model input: token ids (special tokens included) and their segment ids."""

    input_ids: list[int]
    type_ids: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True, slots=True)
class _Template:
    """Where the model's special tokens go around one or two texts, with their segment ids."""

    parts: tuple[tuple[int | None, int], ...]  # (special token id, or None for text i), type id

    def fill(self, texts: tuple[list[int], ...]) -> Sequence:
        ids: list[int] = []
        types: list[int] = []
        text_iter = iter(texts)
        for token, type_id in self.parts:
            chunk = next(text_iter) if token is None else [token]
            ids.extend(chunk)
            types.extend([type_id] * len(chunk))
        return Sequence(ids, types)

    @property
    def specials(self) -> int:
        return sum(token is not None for token, _ in self.parts)


class TextTokenizer:
    """Encodes texts and assembles single sequences and (query, document) pairs."""

    def __init__(self, tokenizer: Tokenizer, pad_id: int) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.pad_id = pad_id
        self._single = self._learn_template(pair=False)
        self._pair = self._learn_template(pair=True)
        self.pair_specials = self._pair.specials
        self.single_specials = self._single.specials

    @classmethod
    def from_dir(cls, path: Path) -> TextTokenizer:
        """Load `tokenizer.json`, or convert a slow tokenizer through transformers once."""
        file = path / "tokenizer.json"
        if file.is_file():
            tokenizer = Tokenizer.from_file(str(file))
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(path), use_fast=True).backend_tokenizer
        return cls(tokenizer, pad_id=_pad_id(path, tokenizer))

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens (runs in parallel in Rust)."""
        return [e.ids for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Each text's tokens as (start, end) character offsets into it (spans cut on them)."""
        return [
            list(e.offsets) for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)
        ]

    def token_id(self, token: str) -> int | None:
        """The id of one vocabulary entry (not of a text: no tokenization)."""
        return self._tokenizer.token_to_id(token)

    def decode(self, ids: list[int]) -> str:
        """The text of token ids, special tokens kept (transformers' `decode` default)."""
        return str(self._tokenizer.decode(ids, skip_special_tokens=False))

    def truncate_text(self, text: str, max_tokens: int) -> str:
        """`text` cut after its first `max_tokens` tokens (whole, if it is that short)."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        if len(encoding.ids) <= max_tokens:
            return text
        return text[: encoding.offsets[max_tokens - 1][1]] if max_tokens > 0 else ""

    def pair(self, query_ids: list[int], doc_ids: list[int]) -> Sequence:
        """`[CLS] query [SEP] document [SEP]`, or the model's own pair template."""
        return self._pair.fill((query_ids, doc_ids))

    def single(self, ids: list[int]) -> Sequence:
        return self._single.fill((ids,))

    def _learn_template(self, pair: bool) -> _Template:
        """Ask the post-processor where it puts special tokens around one-token texts."""
        first, second = self._tokenizer.encode_batch(["a", "b"], add_special_tokens=False)
        merged = self._tokenizer.post_process(first, second if pair else None, True)
        # Where each text starts, counted in its non-special tokens: a template without
        # special tokens between the texts (byte-level BPE, as in Qwen) still has two parts.
        starts = {0, len(first.ids)} if pair else {0}
        parts: list[tuple[int | None, int]] = []
        seen = 0
        for token, special, type_id in zip(
            merged.ids, merged.special_tokens_mask, merged.type_ids, strict=True
        ):
            if special:
                parts.append((token, type_id))
                continue
            if seen in starts:
                parts.append((None, type_id))
            seen += 1
        return _Template(tuple(parts))


def _pad_id(path: Path, tokenizer: Tokenizer) -> int:
    config_file = path / "config.json"
    if config_file.is_file():
        pad = json.loads(config_file.read_text(encoding="utf-8")).get("pad_token_id")
        if isinstance(pad, int):
            return pad
    for token in ("[PAD]", "<pad>"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    return 0
