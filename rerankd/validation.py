"""Pydantic's validation errors in the user's words: the field, what it expects, what came.

One formatter for every route, dialect, registration and setting. Pydantic reports a value
that fits no member of a union once per member, located by the member's type
(`documents.list[union[str,dict[str,any]]].1.str`); here those tags leave the location, the
members' expectations are joined ("a string or an object"), and where one member got
further into the value (an element of the list), only its complaints are kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

MAX_PROBLEMS = 10
# Patterns a field may have, described; a raw regular expression never reaches the user.
PATTERNS = {
    r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$": "a name that starts with a letter or digit and "
    "holds only letters, digits, '.', '_', '/' and '-' (at most 200 characters)",
}
_TAG = re.compile(r"[\[\],A-Z-]|^(str|int|float|bool|dict|list|none|any|bytes)$")


def describe_validation_error(errors: Sequence[Mapping[str, Any]], flags: bool = False) -> str:
    """One sentence per field: `field: expected X, got Y`, joined by '; '. `flags`: name the
    top-level fields as the command line's `--flags`."""
    groups: dict[tuple[str | int, ...], list[Mapping[str, Any]]] = {}
    for error in errors:
        groups.setdefault(_location(error.get("loc", ())), []).append(error)
    # A union member that failed at the top loses to one that got further into the value.
    deepest = [
        loc
        for loc in groups
        if not any(other[: len(loc)] == loc and other != loc for other in groups)
    ]
    parts = [_sentence(loc, groups[loc], flags) for loc in deepest]
    more = f" (and {len(parts) - MAX_PROBLEMS} more)" if len(parts) > MAX_PROBLEMS else ""
    return "; ".join(parts[:MAX_PROBLEMS]) + more


def _location(loc: Sequence[Any]) -> tuple[str | int, ...]:
    """The path in the user's JSON: without `body` and without union members' type tags."""
    return tuple(
        part
        for part in loc
        if part != "body" and (isinstance(part, int) or not _TAG.search(str(part)))
    )


def _where(loc: tuple[str | int, ...], flags: bool) -> str:
    if not loc:
        return "the body"
    if flags and isinstance(loc[0], str):
        loc = ("--" + loc[0].replace("_", "-"), *loc[1:])
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _sentence(loc: tuple[str | int, ...], errors: list[Mapping[str, Any]], flags: bool) -> str:
    where = _where(loc, flags)
    kinds = {str(e.get("type", "")) for e in errors}
    if kinds == {"missing"}:
        return f"{where}: required, but missing"
    if kinds == {"extra_forbidden"}:
        return f"{where}: not a field this request takes"
    expected = list(dict.fromkeys(_expected(e) for e in errors))
    got = _got(errors[0].get("input"))
    said = [x for x in expected if x.startswith("!")]
    if said:  # a validator's own sentence already says what is wrong
        return f"{where}: {said[0][1:]}"
    return f"{where}: expected {' or '.join(expected)}, got {got}"


def _expected(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type", ""))
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    simple = {
        "string_type": "a string",
        "list_type": "a list",
        "dict_type": "an object",
        "model_type": "an object",
        "model_attributes_type": "an object",
        "int_type": "an integer",
        "int_parsing": "an integer",
        "int_from_float": "a whole number",
        "float_type": "a number",
        "float_parsing": "a number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "none_required": "null",
        "string_unicode": "valid Unicode text",
        "finite_number": "a finite number",
    }
    if kind in simple:
        return simple[kind]
    bounds = {
        "greater_than_equal": ("a number of at least", "ge"),
        "greater_than": ("a number above", "gt"),
        "less_than_equal": ("a number of at most", "le"),
        "less_than": ("a number below", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"{words} {ctx.get(key)}"
    if kind == "too_short":
        return f"at least {_count(ctx.get('min_length', 1), 'item')}"
    if kind == "too_long":
        return f"at most {_count(ctx.get('max_length', 0), 'item')}"
    if kind == "string_too_short":
        return f"text of at least {_count(ctx.get('min_length', 1), 'character')}"
    if kind == "string_too_long":
        return f"text of at most {_count(ctx.get('max_length', 0), 'character')}"
    if kind == "string_pattern_mismatch":
        return PATTERNS.get(str(ctx.get("pattern")), "text in another form (see /docs)")
    if kind in {"literal_error", "enum"}:
        return f"one of {ctx.get('expected')}"
    message = str(error.get("msg", "invalid"))
    return "!" + message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _count(number: object, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _got(value: Any) -> str:
    """The value that came, in JSON's words, short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})" if value else "an empty string"
    if isinstance(value, list):
        return f"a list of {_count(len(value), 'item')}"
    if isinstance(value, Mapping):
        keys = ", ".join(repr(k) for k in list(value)[:5])
        return f"an object with {keys}" if keys else "an empty object"
    return type(value).__name__
