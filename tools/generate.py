#!/usr/bin/env python3
"""Regenerate the files derived from another: `make openapi`, `make settings-table`.

    python3 tools/generate.py openapi          openapi.json from openapi.yaml (the one edited)
    python3 tools/generate.py settings-table   from settings.py's table: docs/configuration.md's, and options.py

The tests say when one is stale (tests/test_openapi.py, tests/test_settings.py).
"""

from __future__ import annotations

import json
import re
import sys

import yaml

import settings
from testkit import ROOT

CONFIGURATION = "docs/configuration.md"  # the settings' table, for readers (the README links to it)


def openapi() -> None:
    document = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    (ROOT / "openapi.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def settings_table() -> None:
    """options.py, and the table's lines in docs/configuration.md (the text around them kept)."""
    (ROOT / "options.py").write_text(settings.options_module())
    page = ROOT / CONFIGURATION
    text = page.read_text()
    table = re.search(r"^\|.*\|\n(?:^\|.*\|\n)*", text, re.M)
    if table is None:
        sys.exit(f"{CONFIGURATION}: no table")
    page.write_text(text[: table.start()] + settings.markdown() + "\n" + text[table.end() :])


TARGETS = {"openapi": openapi, "settings-table": settings_table}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: generate.py {'|'.join(TARGETS)}")
    TARGETS[sys.argv[1]]()
