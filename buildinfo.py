"""What this build is: the service's version and what it runs on (`--version`, /metrics).

The version is declared once, in pyproject.toml: read from the file beside this module (a
checkout, and the image, which copies it), else from the installed distribution's metadata.
Everything else that names a version (openapi.yaml, CHANGELOG.md, the image's tag and labels,
the manifests) is checked against it by tests/test_version.py.
"""

from __future__ import annotations

import importlib.metadata
import platform
import tomllib
from pathlib import Path

DISTRIBUTION = "userprofile-service"


def _version() -> str:
    pyproject = Path(__file__).with_name("pyproject.toml")
    try:
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    except FileNotFoundError:
        return importlib.metadata.version(DISTRIBUTION)


def _sdk_version() -> str:
    """The Couchbase SDK's installed version, read without importing it (the embedded store needs none)."""
    try:
        return importlib.metadata.version("couchbase")
    except importlib.metadata.PackageNotFoundError:
        return "none"


VERSION = _version()
PYTHON = platform.python_version()
SDK = _sdk_version()


def describe() -> str:
    """The line `userprofile_service.py --version` prints."""
    return f"{DISTRIBUTION} {VERSION} (Python {PYTHON}, couchbase SDK {SDK})"
