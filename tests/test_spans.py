"""Sentence and window offsets for spans: exact for any Unicode text, bounded like chunks."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from rerankd.spans import SpanOptions, best, extends, pieces, sentences, windows

TEXT = (
    "東京は日本の首都です。大阪は大きい！\r\n"
    "Café au lait 👍🏽. The cafe\u0301 opens at 9! 👨\u200d👩\u200d👧 are here?\r\n"
    "Ünïcödé ok.\u0301 \r\n\r\n  last one"
)


def words(texts: list[str]) -> list[list[tuple[int, int]]]:
    """Whitespace words as tokens: enough to cut long sentences."""
    out = []
    for text in texts:
        marks, start = [], None
        for i, ch in enumerate(text + " "):
            if ch.isspace() and start is not None:
                marks.append((start, i))
                start = None
            elif not ch.isspace() and start is None:
                start = i
        out.append(marks)
    return out


def test_sentences_slice_the_text_exactly() -> None:
    found = [TEXT[a:b] for a, b in sentences(TEXT)]
    assert found == [
        "東京は日本の首都です。",
        "大阪は大きい！",
        "Café au lait 👍🏽.",
        "The cafe\u0301 opens at 9!",
        "👨\u200d👩\u200d👧 are here?",
        "Ünïcödé ok.\u0301",
        "last one",
    ]


def test_long_sentences_are_cut_at_word_starts_and_windows_are_bounded() -> None:
    text = " ".join(f"w{i}" for i in range(100)) + ". Short one."
    units = pieces(text, words, max_tokens=30)
    assert [len(text[a:b].split()) for a, b in units] == [30, 30, 30, 10, 2]
    assert all(text[a:b] == text[a:b].strip() for a, b in units)
    assert len(windows(units, SpanOptions(window=1, stride=1, max_windows=3))) == 3
    two = windows(units, SpanOptions(window=2, stride=1, max_windows=16))
    assert two == [(units[i][0], units[i + 1][1]) for i in range(4)]


def test_best_keeps_the_top_windows_that_do_not_overlap() -> None:
    spans = best([(0, 10), (5, 15), (20, 30)], np.array([0.5, 0.9, 0.7]), 3)
    assert [(s.start, s.end, s.score) for s in spans] == [(5, 15, 0.9), (20, 30, 0.7)]


@given(
    st.text(alphabet=st.sampled_from(" \r\n.!?。a東👍\U0001f3fd\u200d\u0301\ufe0f"), max_size=60)
)
def test_no_cut_on_the_hard_characters(text: str) -> None:
    check_sentences(text)
    check_pieces(text, 2)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_no_cut_splits_a_character_and_every_sentence_is_trimmed(text: str) -> None:
    check_sentences(text)


def check_sentences(text: str) -> None:
    previous = 0
    for start, end in sentences(text):
        assert previous <= start < end <= len(text)
        assert not extends(text, start) and not extends(text, end)  # whole characters only
        assert text[start : start + 1].strip() or extends(text, start + 1)  # a mark's base
        assert not text[end - 1].isspace()
        previous = end


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300), st.integers(1, 8))
def test_pieces_never_split_a_character(text: str, room: int) -> None:
    check_pieces(text, room)


def check_pieces(text: str, room: int) -> None:
    for start, end in pieces(text, words, room):
        assert not extends(text, start) and not extends(text, end)
