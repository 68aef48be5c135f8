"""Shared fixtures (a seeded embedded store, the real service process) and the tiers.

Every test has exactly one tier marker (pyproject.toml lists them; tests/README.md says
what each needs and how to run it): ``inprocess`` (no service process, no socket),
``socket`` (the service process, or the SDK, over real sockets on loopback) or
``external`` (a program from outside the Python environment: CAVES, podman, JMeter,
HAProxy, nginx, iptables). A test with none, or with two, stops the collection.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-5f1c2a9e7b3d4c60"
SEED = 42
COUNT = 300

# The tiers are the markers pyproject.toml registers (pytest's own and plugins' are not tiers).
TIERS = [line.split(":", 1)[0] for line in
         tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]]


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything, so every collected test is checked
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wrong = []
    for item in items:
        marked = [mark.name for mark in item.iter_markers() if mark.name in TIERS]
        if len(marked) != 1:
            wrong.append(f"{item.nodeid}: {', '.join(marked) or 'no tier'}")
    if wrong:
        raise pytest.UsageError(f"every test needs exactly one tier marker of {TIERS} "
                                "(tests/README.md):\n  " + "\n  ".join(wrong))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_loaddata(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "loaddata.py"), *args],
        env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    )


def wait_until(predicate, timeout: float, interval: float = 0.1):
    """Poll until predicate() is truthy or timeout passes; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(interval)
    return predicate()


class ServiceProcess:
    """The service started as users start it: ``python3 userprofile_service.py``."""

    def __init__(self, env: dict, *args: str, log_path: Path | None = None):
        self.port = free_port()
        self.host = "127.0.0.1"
        self.env = {**os.environ, "ACCESS_LOG": "true", **env}
        self.args = ["--host", self.host, "--port", str(self.port), *args]
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, wait_for: str = "/healthz", timeout: float = 30) -> ServiceProcess:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "userprofile_service.py"), *self.args],
            env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}: {self.log()}")
            try:
                if self.get(wait_for)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"service did not answer 200 on {wait_for} in {timeout}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def connection(self, timeout: float = 10) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def get(self, path: str, token: str | None = None, method: str = "GET", headers: dict | None = None):
        """One request on a new connection: (status, headers, body)."""
        conn = self.connection()
        try:
            hdrs = dict(headers or {})
            if token is not None:
                hdrs["Authorization"] = f"Bearer {token}"
            conn.request(method, path, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


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
