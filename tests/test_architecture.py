"""The package's shape: no import circle, no private name or member crossing a module.

Read from the source with :mod:`ast` (nothing is imported), so a circle hidden
inside a function body or under ``TYPE_CHECKING`` counts as well.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "facetrust"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def resolve(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module name a ``from ... import`` statement names."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not is_package(importer):
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str) -> Iterator[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in module ``name``."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield resolve(name, node), [a.name for a in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno


def edges(name: str) -> set[str]:
    """Project modules that module ``name`` imports (a submodule named in a
    ``from package import submodule`` counts as that submodule)."""
    found = set()
    for target, names, _ in imports(name):
        if target in MODULES:
            submodules = {f"{target}.{n}" for n in names} & MODULES.keys()
            found.update(submodules)
            if len(submodules) < len(names) or not names:
                found.add(target)
    found.discard(name)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("package", ["facetrust.gallery", "facetrust"])
def test_no_import_circle(package: str) -> None:
    graph = {
        name: {e for e in edges(name) if e.startswith(package)}
        for name in MODULES
        if name == package or name.startswith(package + ".")
    }
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_no_module_imports_a_private_name_from_another() -> None:
    offences = [
        f"{MODULES[name].relative_to(SRC)}:{line} imports {n} from {target}"
        for name in MODULES
        for target, names, line in imports(name)
        if target.startswith("facetrust")
        for n in names
        if n.startswith("_") and not n.startswith("__")
    ]
    assert offences == []


def test_nothing_below_the_gallery_facade_imports_it() -> None:
    below = [n for n in MODULES if n.startswith("facetrust.gallery.")]
    above = {"facetrust.gallery.core", "facetrust.gallery.photos",
             "facetrust.gallery.batch_enrolment", "facetrust.gallery.batch_queue",
             "facetrust.gallery.key_file"}
    offenders = sorted(
        n for n in below if n not in above and "facetrust.gallery.core" in edges(n)
    )
    assert offenders == []
