"""No import cycle anywhere in the tree: the service's modules, testkit, tests, tools, bench and jmeter.

Every Python file is read with ``ast`` (never imported) and every import in it counts, those inside
functions included: a cycle broken by a late import is still two modules that need each other. Only
imports under ``if TYPE_CHECKING:`` do not count: they never run. Each import is resolved as Python
would resolve it when the file runs: a script (bench/run.py, jmeter/loadtest.py, a test) sees its own
directory first, then the root's modules and packages; a package's module (testkit, tools.fleet,
tools.k8s) sees the root, and its relative imports its package. Importing a package's module runs the
package's ``__init__`` first, so that is an edge too.
"""

from __future__ import annotations

import ast
import functools
import os
from pathlib import Path

import pytest

from testkit import ROOT

pytestmark = pytest.mark.inprocess

# Not the project's Python: environments, installed tools, what the benchmarks' Node.js servers install.
SKIPPED = {".venv", ".venv-3.13", ".tools", "node_modules", "data", ".git", "express", "node_bare"}


def python_files() -> list[Path]:
    found = []
    for folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if name not in SKIPPED and not name.endswith(".egg-info")]
        found += [Path(folder) / name for name in names if name.endswith(".py")]
    return sorted(found)


def package_of(path: Path) -> list[str]:
    """The dotted package a file belongs to ([] for a script or a root module): its directories up to the
    root, as long as each holds an __init__.py."""
    parts: list[str] = []
    folder = path.parent
    while folder != ROOT and (folder / "__init__.py").exists():
        parts.insert(0, folder.name)
        folder = folder.parent
    return parts if folder == ROOT else []


@functools.cache
def module_file(base: Path, dotted: tuple[str, ...]) -> Path | None:
    """The file a dotted name under base names: a module, or a package's __init__."""
    target = base.joinpath(*dotted)
    for candidate in (target.with_suffix(".py"), target / "__init__.py"):
        if dotted and candidate.is_file():
            return candidate
    return None


BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")


def running(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """The imports that run: all of them but those under `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack += node.orelse
        elif isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        else:  # imports are statements: only the blocks of statements can hold one
            stack += [child for block in BLOCKS for child in getattr(node, block, ())]
    return found


def targets(path: Path) -> set[Path]:
    """The files of the tree that importing (running) this file imports."""
    package = package_of(path)
    bases = [ROOT] if package else [path.parent, ROOT]  # a script's own directory comes first on sys.path

    def resolve(dotted: list[str]) -> Path | None:
        return next((found for base in bases if (found := module_file(base, tuple(dotted)))), None)

    found: set[Path] = set()
    for node in running(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        elif node.level:  # relative: from the package (or its parents)
            here = package[: len(package) - node.level + 1]
            stem = [*here, *(node.module.split(".") if node.module else [])]
            names = [stem, *([*stem, alias.name] for alias in node.names)]
        else:
            stem = node.module.split(".") if node.module else []
            names = [stem, *([*stem, alias.name] for alias in node.names)]
        for dotted in names:
            for depth in range(1, len(dotted) + 1):  # a package's __init__ runs before its module
                if (target := resolve(dotted[:depth])) and target != path:
                    found.add(target)
    return found


@functools.cache
def tree_graph() -> dict[Path, set[Path]]:
    """Every file of the tree and the files it imports."""
    return {p: targets(p) for p in python_files()}


def cycle(graph: dict[Path, set[Path]]) -> list[Path]:
    """One cycle of the graph, as the files along it ([] when there is none)."""
    done: set[Path] = set()
    path: list[Path] = []
    on_path: set[Path] = set()

    def visit(node: Path) -> list[Path]:
        path.append(node)
        on_path.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done and (found := visit(nxt)):
                return found
        on_path.discard(path.pop())
        done.add(node)
        return []

    for start in sorted(graph):
        if start not in done and (found := visit(start)):
            return found
    return []


def test_the_walk_sees_every_part_of_the_tree():
    seen = {p.relative_to(ROOT).parts[0] if len(p.relative_to(ROOT).parts) > 1 else "." for p in python_files()}
    assert {".", "testkit", "tests", "tools", "bench", "jmeter"} <= seen
    graph = tree_graph()
    # Edges the walk must find: a function-level import, a relative one, a script's neighbour, a package's __init__.
    assert ROOT / "tools" / "fleet" / "instances.py" in graph[ROOT / "tools" / "fleet" / "balancers.py"]
    assert ROOT / "testkit" / "__init__.py" in graph[ROOT / "tools" / "soak.py"]
    assert ROOT / "testkit" / "caves.py" in graph[ROOT / "tools" / "soak.py"]  # imported inside a function
    assert ROOT / "tests" / "conftest.py" in graph[ROOT / "tests" / "test_image.py"]
    assert ROOT / "tools" / "fleet" / "__init__.py" in graph[ROOT / "tools" / "fleet" / "clients.py"]


def test_no_import_cycle_anywhere():
    found = cycle(tree_graph())
    assert not found, "an import cycle: " + " -> ".join(str(p.relative_to(ROOT)) for p in found)


def test_the_cycle_finder_finds_one():
    a, b, c = Path("a.py"), Path("b.py"), Path("c.py")
    assert cycle({a: {b}, b: {c}, c: {a}}) == [a, b, c, a]
    assert cycle({a: {b, c}, b: {c}, c: set()}) == []
