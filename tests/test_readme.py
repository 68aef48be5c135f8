"""The README stays a one-sitting read, and what it points to exists."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT

pytestmark = pytest.mark.inprocess

README = (ROOT / "README.md").read_text()


def test_the_readme_is_at_most_12000_characters():
    assert len(README) <= 12000, f"{len(README)} characters: move detail beside what it describes"


def test_every_file_it_names_exists():
    named = set(re.findall(r"`((?:[\w.-]+/)*[\w-]+\.(?:py|md|yaml|json|sh))`", README))
    assert {"bench/README.md", "k8s/README.md", "jmeter/README.md", "tests/README.md"} <= named
    missing = sorted(name for name in named if not (ROOT / name).exists() and name not in ("avatar.png",))
    assert not missing, missing


def test_every_make_target_it_names_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"\bmake (\w+)", README))
    assert {"run", "test", "check", "bench", "image", "loadtest"} <= targets
    assert all(re.search(rf"^{t}:", makefile, re.M) for t in targets), targets
