"""Shared fixtures (a seeded embedded store, the real service process) and the tiers.

Every test has exactly one tier marker (pyproject.toml lists them; tests/README.md says
what each needs and how to run it): ``inprocess`` (no service process, no socket),
``socket`` (the service process, or the SDK, over real sockets on loopback),
``external`` (a program from outside the Python environment: CAVES, podman, JMeter,
HAProxy, nginx, iptables), ``integration`` (Keycloak, an OpenTelemetry Collector, kustomize
and kube-score) or ``k8s`` (a real Kubernetes). A test with none, or with two, stops the
collection.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from testkit import ROOT, ServiceProcess, run_loaddata

TOKEN = "test-token-5f1c2a9e7b3d4c60"
SEED = 42
COUNT = 300

# The tiers are the markers pyproject.toml registers (pytest's own and plugins' are not tiers).
TIERS = [
    line.split(":", 1)[0]
    for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
]


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything, so every collected test is checked
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wrong = []
    for item in items:
        marked = [mark.name for mark in item.iter_markers() if mark.name in TIERS]
        if len(marked) != 1:
            wrong.append(f"{item.nodeid}: {', '.join(marked) or 'no tier'}")
    if wrong:
        raise pytest.UsageError(
            f"every test needs exactly one tier marker of {TIERS} (tests/README.md):\n  " + "\n  ".join(wrong)
        )


@pytest.fixture(scope="session")
def seeded_db(tmp_path_factory) -> Path:
    """An embedded store with COUNT generated profiles and the test token."""
    db = tmp_path_factory.mktemp("store") / "userprofile.db"
    run_loaddata({"USERPROFILE_DB": str(db)}, "--count", str(COUNT), "--seed", str(SEED), "--token", TOKEN)
    return db


@pytest.fixture(scope="session")
def server(seeded_db, tmp_path_factory):
    """One service process on the seeded store, shared by read-only tests."""
    log = tmp_path_factory.mktemp("log") / "service.log"
    svc = ServiceProcess({"USERPROFILE_DB": str(seeded_db)}, log_path=log).start(wait_for="/readyz")
    yield svc
    svc.stop()
    assert "Traceback" not in svc.log()
    assert TOKEN not in svc.log()
