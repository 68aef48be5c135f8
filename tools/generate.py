#!/usr/bin/env python3
"""Regenerate the files derived from another: `make openapi`, `make settings-table`.

    python3 tools/generate.py openapi          openapi.json from openapi.yaml (the one edited)
    python3 tools/generate.py settings-table   from settings.py's table: the README's, and options.py

The tests say when one is stale (tests/test_openapi.py, tests/test_settings.py).
"""

from __future__ import annotations

import json
import re
import sys

import yaml

import settings
from testkit import ROOT


def openapi() -> None:
    document = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    (ROOT / "openapi.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def settings_table() -> None:
    """options.py, and the table's lines in the README's Configuration section (the text around them kept)."""
    (ROOT / "options.py").write_text(settings.options_module())
    readme = ROOT / "README.md"
    text = readme.read_text()
    section = re.search(r"^## Configuration\n.*?(?=^## )", text, re.S | re.M)
    table = re.search(r"^\|.*\|\n(?:^\|.*\|\n)*", section.group(0), re.M) if section else None
    if section is None or table is None:
        sys.exit("README.md: no table in a Configuration section")
    start = section.start() + table.start()
    readme.write_text(text[:start] + settings.markdown() + "\n" + text[start + len(table.group(0)) :])


TARGETS = {"openapi": openapi, "settings-table": settings_table}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: generate.py {'|'.join(TARGETS)}")
    TARGETS[sys.argv[1]]()
