"""rerankd's modules import one another without a circle.

Every import of a rerankd module counts (at module level, inside functions, under
TYPE_CHECKING): a circle that only a lazy import hides is still two modules that cannot be
understood, tested or moved apart. Importing `a.b.c` also runs the `__init__` of each package
above it (`a.b`), except the packages the importing module itself lives in (those are
already running); naming such a package explicitly is an arrow like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import rerankd

ROOT = Path(rerankd.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The rerankd modules `name` imports (the modules named, not the names taken)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            submodules = {f"{base}.{alias.name}" for alias in node.names} & known
            found.update(submodules)
            if len(submodules) < len(node.names):  # a name taken from `base` itself
                found.add(base)
    edges: set[str] = set()
    for target in found & known:
        edges.add(target)
        parts = target.split(".")
        for end in range(2, len(parts)):  # the packages above it run first (not its own)
            above = ".".join(parts[:end])
            if above in known and not name.startswith(above + "."):
                edges.add(above)
    edges.discard(name)
    return edges


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imported(name, path, known) for name, path in found.items()}


def find_circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph, as the modules around it, or None (depth-first, iterative)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(edges):
        if start in state:
            continue
        path = [start]
        todo = [iter(sorted(edges[start]))]
        state[start] = 1
        while todo:
            step = next(todo[-1], None)
            if step is None:
                state[path.pop()] = 2
                todo.pop()
            elif state.get(step) == 1:
                return [*path[path.index(step) :], step]
            elif step not in state:
                state[step] = 1
                path.append(step)
                todo.append(iter(sorted(edges[step])))
    return None


def test_the_finder_sees_a_circle_and_its_absence() -> None:
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_holds_lazy_and_type_only_imports() -> None:
    edges = graph()
    assert "rerankd.families.base" in edges["rerankd.scoring.base"]
    assert "rerankd.engine" in edges["rerankd.families.base"]  # the package above runs first
    assert "rerankd.engine.quantize" in edges["rerankd.engine.onnx_backend"]  # in a function


def test_no_module_of_rerankd_imports_itself_back() -> None:
    circle = find_circle(graph())
    assert circle is None, "import circle: " + " -> ".join(circle or [])
