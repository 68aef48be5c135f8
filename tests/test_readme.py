"""The README stays a one-sitting read, and what it points to exists."""

from __future__ import annotations

import re

import pytest

from testkit import ROOT

pytestmark = pytest.mark.inprocess

README = (ROOT / "README.md").read_text()


SECTIONS = ("Two commands", "The API", "Configuration", "Loading data", "Couchbase", "Design", "Where to change what")


def test_it_has_the_sections_a_reader_looks_for_in_order():
    headings = re.findall(r"^## (.+)$", README, re.M)
    found = [h for h in headings if h in SECTIONS]
    assert found == list(SECTIONS), headings


def test_it_reads_in_minutes():
    # Room to grow, not a cap hit by every addition: detail belongs beside what it describes.
    assert len(README) <= 13000, f"{len(README)} characters: move detail beside what it describes"


def test_every_file_it_names_exists():
    named = set(re.findall(r"`((?:[\w.-]+/)*[\w-]+\.(?:py|md|yaml|json|sh))`", README))
    assert {"bench/README.md", "k8s/README.md", "jmeter/README.md", "tests/README.md"} <= named
    missing = sorted(name for name in named if not (ROOT / name).exists() and name not in ("avatar.png",))
    assert not missing, missing


def test_the_design_table_names_every_module():
    design = README.split("## Design", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(\w+)\.py`", design))
    assert sorted(p.stem for p in ROOT.glob("*.py") if p.stem not in named) == []


def test_every_make_target_it_names_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"\bmake ([\w-]+)", README))
    assert {"run", "test", "check", "bench", "image", "loadtest"} <= targets
    assert all(re.search(rf"^{t}:", makefile, re.M) for t in targets), targets
