"""pyproject.toml's [project]: what `pip install -e .` (the Makefile) makes importable, so
tests, tools and bench import the service's modules without touching sys.path."""

from __future__ import annotations

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


def test_dependencies_are_the_pinned_requirements():
    pinned = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert PYPROJECT["project"]["dependencies"] == [p for p in pinned if p]


def test_the_tracing_extra_is_the_pinned_tracing_requirements():
    pinned = [line.split("#")[0].strip() for line in (ROOT / "requirements-tracing.txt").read_text().splitlines()]
    assert PYPROJECT["project"]["optional-dependencies"]["tracing"] == [p for p in pinned if p]
