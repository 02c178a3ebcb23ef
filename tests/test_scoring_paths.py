"""Every family names a scoring path that exists, and nothing outside the paths asks a model's
shape (the service and `Reranker` hand every request to the path the family names)."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import rerankd
from rerankd.families import FAMILIES
from rerankd.families.base import ScoringKind
from rerankd.images import ImageLoader, ImagePolicy
from rerankd.scoring import ScoringPaths

ROOT = Path(rerankd.__file__).parent
SHAPE_AWARE = {ROOT / "scoring", ROOT / "families"}


def test_every_family_names_a_path_of_its_kind() -> None:
    paths = ScoringPaths(ImageLoader(ImagePolicy()))
    assert set(paths.paths) == set(typing.get_args(ScoringKind))
    for name, family in FAMILIES.items():
        assert family.scoring in paths.paths, name
        assert paths.paths[family.scoring].kind == family.scoring
    kinds = {family.scoring for family in FAMILIES.values()}
    assert kinds == set(typing.get_args(ScoringKind)), "a path no family takes"


def shape_questions(tree: ast.AST) -> list[str]:
    """`isinstance(x, SomethingFamily)` and reads of a family's `scoring` or `embeds`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
            kinds = node.args[1] if len(node.args) > 1 else None
            names = [n.id for n in ast.walk(kinds) if isinstance(n, ast.Name)] if kinds else []
            found += [f"isinstance(..., {n})" for n in names if n.endswith("Family")]
        shape = isinstance(node, ast.Attribute) and node.attr in {"scoring", "embeds"}
        if shape and "family" in ast.unparse(node.value):  # type: ignore[attr-defined]
            found.append(ast.unparse(node))
    return found


def test_the_finder_sees_a_shape_question() -> None:
    tree = ast.parse(
        "isinstance(engine.family, EmbeddingFamily)\nif served.engine.family.embeds: 0"
    )
    assert shape_questions(tree) == [
        "isinstance(..., EmbeddingFamily)",
        "served.engine.family.embeds",
    ]


def test_no_shape_question_outside_the_paths_and_families() -> None:
    asked = {
        str(path.relative_to(ROOT)): found
        for path in sorted(ROOT.rglob("*.py"))
        if not any(place in path.parents for place in SHAPE_AWARE)
        if (found := shape_questions(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert asked == {}
