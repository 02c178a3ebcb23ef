"""Which writing system a text is in, so an English-only model can say when it is out of its depth.

The built-in model (all-MiniLM-L6-v2) was trained on English. Given Chinese it still returns
scores, and ranks the seed tutorial's fruit passage above the iPhone passage for "苹果手机有哪些新功能?"
without a word. `script_notice` turns that into a sentence the API sends as a `Warning`
header (and the playground shows), and logs once per model and script the flag that serves a
multilingual model instead.

Scripts are Unicode script properties (`\\p{Script=Han}`), counted over letters only, so
digits, punctuation and spaces never tip the balance.
"""

from __future__ import annotations

import logging
import threading

import regex

from rerankd.models.spec import BUILTIN_NAMES

logger = logging.getLogger(__name__)

MULTILINGUAL_FLAG = "--model BAAI/bge-reranker-v2-m3"
LATIN_ONLY = frozenset({"Latin"})
# Enough text to tell the script of a request, bounded so a 10 MiB body costs microseconds.
SAMPLE_CHARS = 4000
# Scripts named in messages; letters in any other script still count as untrained.
KNOWN_SCRIPTS = (
    "Latin", "Han", "Hiragana", "Katakana", "Hangul", "Cyrillic", "Greek", "Arabic", "Hebrew",
    "Devanagari", "Bengali", "Tamil", "Telugu", "Thai", "Georgian", "Armenian", "Ethiopic",
)  # fmt: skip
_LETTER = regex.compile(r"\p{L}")
_SCRIPT = {name: regex.compile(rf"\p{{Script={name}}}") for name in KNOWN_SCRIPTS}

_logged: set[tuple[str, str]] = set()
_logged_lock = threading.Lock()


def script_counts(text: str) -> dict[str, int]:
    """Letters per script in `text` (its first SAMPLE_CHARS characters); 'Other' for the rest."""
    sample = text[:SAMPLE_CHARS]
    letters = len(_LETTER.findall(sample))
    counts = {name: len(pattern.findall(sample)) for name, pattern in _SCRIPT.items()}
    counts = {name: count for name, count in counts.items() if count}
    other = letters - sum(counts.values())
    if other > 0:
        counts["Other"] = other
    return counts


def untrained_share(texts: list[str], trained: frozenset[str]) -> tuple[float, str | None]:
    """(share of letters outside `trained`, the most common such script) over `texts`."""
    total: dict[str, int] = {}
    budget = SAMPLE_CHARS
    for text in texts:
        if budget <= 0:
            break
        for name, count in script_counts(text[:budget]).items():
            total[name] = total.get(name, 0) + count
        budget -= min(len(text), budget)
    letters = sum(total.values())
    foreign = {name: count for name, count in total.items() if name not in trained}
    if not letters or not foreign:
        return 0.0, None
    return sum(foreign.values()) / letters, max(foreign, key=lambda name: foreign[name])


def trained_scripts(source: str) -> frozenset[str] | None:
    """Scripts a model was trained on, where rerankd knows them; None: no claim (multilingual)."""
    return LATIN_ONLY if source in BUILTIN_NAMES else None


def script_notice(model: str, source: str, query: str, documents: list[str]) -> str | None:
    """A warning when the query or the documents are mostly in a script `source` never saw."""
    trained = trained_scripts(source)
    if trained is None:
        return None
    for part, texts in (("query", [query]), ("documents", documents)):
        share, script = untrained_share(texts, trained)
        if share > 0.5 and script is not None:
            _log_once(model, script)
            return (
                f"model {model!r} is English-only and {share:.0%} of the letters in the {part} "
                f"are {script} script, so its scores are unreliable here; serve a multilingual "
                f"model with `rerankd serve {MULTILINGUAL_FLAG}`"
            )
    return None


def _log_once(model: str, script: str) -> None:
    with _logged_lock:
        if (model, script) in _logged:
            return
        _logged.add((model, script))
    logger.warning(
        "model %r is English-only but is getting %s text; its ranking will be poor. "
        "Serve BAAI/bge-reranker-v2-m3 instead: rerankd serve %s",
        model,
        script,
        MULTILINGUAL_FLAG,
        extra={"model": model, "script": script, "flag": MULTILINGUAL_FLAG},
    )
