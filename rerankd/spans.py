"""The parts of a document that made it relevant: sentence-aligned windows, scored by the model.

A document is cut into sentences (character offsets into the text exactly as sent: Python
string indices, so one per Unicode code point); a sentence longer than the window's token room
is cut at token boundaries, as chunking cuts a long document. Windows of `window` consecutive
pieces, `stride` apart (raised so a document never yields more windows than it may have chunks),
are scored by the model like documents, and the best non-overlapping ones are the spans.

Offsets never split what a reader sees as one character: a cut moves past combining marks,
emoji modifiers and joiners, and never falls between `\\r` and `\\n`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# A sentence ends after terminal punctuation (and any closing quotes or brackets) followed by
# whitespace, after a CJK full stop whatever follows, or at a line break.
_BOUNDARY = re.compile(
    r"""[.!?…]+["'”’)\]]*(?=\s)|[。！？｡]+["'”’」』)\]）]*|\r\n|[\n\r\u2028\u2029]"""
)
_JOINERS = {"\u200d"}


@dataclass(frozen=True, slots=True)
class Span:
    start: int  # [start, end) into the document's text
    end: int
    score: float

    def as_dict(self) -> dict[str, float | int]:
        return {"start": self.start, "end": self.end, "score": self.score}


@dataclass(frozen=True)
class SpanOptions:
    """How windows are cut and how many spans come back (the server's settings; a request may
    ask for fewer spans)."""

    window: int = 1  # pieces (sentences) per window
    stride: int = 1  # pieces between window starts
    max_tokens: int = 128  # a longer sentence is cut into pieces of at most this many tokens
    max_spans: int = 3  # spans per document
    max_windows: int = 16  # windows per document (the chunk limit)


def extends(text: str, index: int) -> bool:
    """Whether `text[index]` belongs to the character before it (a cut may not fall there)."""
    if index <= 0 or index >= len(text):
        return False
    char, before = text[index], text[index - 1]
    if before == "\r" and char == "\n":
        return True
    if char in _JOINERS or (before in _JOINERS and not char.isspace()):
        return True
    code = ord(char)
    if 0xFE00 <= code <= 0xFE0F or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F:
        return True  # variation selectors, skin tones, tag sequences (flags)
    return unicodedata.category(char) in ("Mn", "Mc", "Me")


def snap(text: str, index: int) -> int:
    """The first index at or after `index` where a cut keeps every character whole."""
    while extends(text, index):
        index += 1
    return index


def sentences(text: str) -> list[tuple[int, int]]:
    """[start, end) of each sentence, without the whitespace around it; none for blank text."""
    cuts = [0]
    for match in _BOUNDARY.finditer(text):
        cuts.append(snap(text, match.end()))
    cuts.append(len(text))
    out = []
    for start, end in zip(cuts, cuts[1:], strict=False):
        start, end = _trim(text, start, end)
        if start < end:
            out.append((start, end))
    return out


# texts -> per text, the (start, end) character offsets of its tokens
Offsets = Callable[[list[str]], list[list[tuple[int, int]]]]


def pieces(text: str, offsets: Offsets, max_tokens: int) -> list[tuple[int, int]]:
    """Sentences, each longer than `max_tokens` cut at token boundaries into shorter pieces."""
    found = sentences(text)
    if not found:
        return []
    tokens = offsets([text[a:b] for a, b in found])
    out: list[tuple[int, int]] = []
    for (start, end), marks in zip(found, tokens, strict=True):
        if len(marks) <= max_tokens:
            out.append((start, end))
            continue
        cut, first = start, 0
        while len(marks) - first > max_tokens:
            last = first + max_tokens  # the piece is marks[first:last]; prefer a word start
            word = next(
                (k for k in range(last, first, -1) if _word_start(text, start + marks[k][0])),
                last,
            )
            boundary = snap(text, start + marks[word][0])
            if cut < boundary < end:
                out.append((cut, boundary))
                cut = boundary
            first = word
        out.append((cut, end))
    return [(a, b) for a, b in (_trim(text, a, b) for a, b in out) if a < b]


def windows(units: list[tuple[int, int]], options: SpanOptions) -> list[tuple[int, int]]:
    """Windows of `options.window` consecutive pieces; the stride grows until at most
    `options.max_windows` windows cover the document."""
    if not units:
        return []
    size = min(options.window, len(units))
    starts = len(units) - size + 1
    stride = max(options.stride, math.ceil(starts / options.max_windows))
    picked = list(range(0, starts, stride))
    if picked[-1] != starts - 1 and len(picked) < options.max_windows:
        picked.append(starts - 1)  # the document's end is covered too
    return [(units[i][0], units[i + size - 1][1]) for i in picked]


def best(windows: list[tuple[int, int]], scores: np.ndarray, limit: int) -> list[Span]:
    """The best-scoring windows that overlap no better one, best first (ties: earlier first)."""
    chosen: list[Span] = []
    for i in np.argsort(-scores, kind="stable"):
        start, end = windows[int(i)]
        if all(end <= s.start or start >= s.end for s in chosen):
            chosen.append(Span(start, end, float(scores[int(i)])))
            if len(chosen) == limit:
                break
    return chosen


def _word_start(text: str, index: int) -> bool:
    """A token that starts a word: after whitespace, or a CJK character (no spaces there)."""
    return index > 0 and (text[index - 1].isspace() or _cjk(text[index]) or _cjk(text[index - 1]))


def _cjk(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Whitespace off both ends, except a space that carries a combining mark."""
    while start < end and text[start].isspace() and not extends(text, start + 1):
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
