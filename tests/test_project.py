"""pyproject.toml's [project]: what `pip install -e .` (the Makefile) makes importable, so
tests, tools and bench import the service's modules without touching sys.path."""

from __future__ import annotations

import ast
import tomllib

import pytest

from testkit import ROOT

pytestmark = pytest.mark.inprocess

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_module_at_the_root_is_installed():
    """A module left out of py-modules imports from the root's own directory (the service's
    start) but from nowhere else: bench, jmeter/loadtest.py and tools would miss it."""
    listed = PYPROJECT["tool"]["setuptools"]["py-modules"]
    assert sorted(listed) == sorted(p.stem for p in ROOT.glob("*.py")), "list every root module in py-modules"


def test_no_import_circle_among_the_modules():
    """Imports only under TYPE_CHECKING (annotations) do not count: they never run."""
    modules = {p.stem for p in ROOT.glob("*.py")}
    imports = {}
    for name in modules:
        tree = ast.parse((ROOT / f"{name}.py").read_text())
        guarded = [
            node for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        ]
        hidden = {id(n) for node in guarded for n in ast.walk(node)}
        found = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import) and id(node) not in hidden
            for alias in node.names
        }
        found |= {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and id(node) not in hidden
        }
        imports[name] = {m.split(".")[0] for m in found} & modules

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(m == goal or (m not in seen and reaches(m, goal, seen | {m})) for m in imports[start])

    assert sorted(m for m in modules if reaches(m, m, {m})) == []


def test_dependencies_are_the_pinned_requirements():
    pinned = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert PYPROJECT["project"]["dependencies"] == [p for p in pinned if p]


def test_the_tracing_extra_is_the_pinned_tracing_requirements():
    pinned = [line.split("#")[0].strip() for line in (ROOT / "requirements-tracing.txt").read_text().splitlines()]
    assert PYPROJECT["project"]["optional-dependencies"]["tracing"] == [p for p in pinned if p]
