"""The fleet's service instances: processes of userprofile_service.py on loopback ports, one
embedded store seeded for them all, and the helpers every part of the fleet shares."""

from __future__ import annotations

import contextlib
import math
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from testkit import ROOT, ServiceProcess, run_loaddata
from testkit.scrape import metric

PROFILES = 1000  # ids 1..PROFILES in the store the fleet serves


def log(msg: str) -> None:
    print(f"fleet: {msg}", file=sys.stderr, flush=True)


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} in {timeout} s")


def seed_store(workdir: Path, token: str) -> Path:
    db = workdir / "userprofile.db"
    run_loaddata(
        {"USERPROFILE_DB": str(db), "COUCHBASE_HOST": None},
        *("--count", str(PROFILES), "--seed", "1", "--token", token),
    )
    return db


class Instance(ServiceProcess):
    """One service process, as a pod runs it, on a loopback port: the moments it was ready, was
    signalled and exited kept for the fleet's report."""

    def __init__(self, name: str, db: Path, workdir: Path, env: dict | None = None, port: int | None = None):
        settings = {"USERPROFILE_DB": str(db), "ACCESS_LOG": "false", "COUCHBASE_HOST": None, **(env or {})}
        super().__init__(settings, log_path=workdir / f"{name}.log", port=port)
        self.name = name
        self.ready_at = self.term_at = self.exit_at = math.nan
        self.exit_code: int | None = None

    def wait_ready(self, timeout: float = 30) -> Instance:
        """Until /readyz answers 200, as the readiness probe waits (polled faster than the kubelet)."""
        self.wait_answers("/readyz", timeout)
        self.ready_at = time.monotonic()
        return self

    def ready_or_stop(self) -> Instance:
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def metrics(self) -> str:
        status, _, body = self.get("/metrics", timeout=2)
        if status != 200:
            raise RuntimeError(f"{self.name}: /metrics answered {status}")
        return body.decode()

    def served(self) -> float:
        """Lookups this instance has answered (its own counter, as Prometheus would scrape it)."""
        return metric(self.metrics(), "userprofile_requests_total", route="/api/v1/id")

    def terminate(self) -> None:
        self.term_at = time.monotonic()
        assert self.proc is not None, "launch() first"
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None, "launch() first"
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # as the kubelet does at the end of terminationGracePeriodSeconds
            self.proc.wait()
            self.exit_code = -9
        self.exit_at = time.monotonic()
        return self.exit_code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc and self.proc.poll() is None:
            self.terminate()
            return self.wait_exit(timeout)
        return self.exit_code if self.exit_code is not None else 0


def grace_seconds() -> float:
    """terminationGracePeriodSeconds of k8s/base/deployment.yaml: the kubelet's SIGKILL comes after it."""
    text = (ROOT / "k8s" / "base" / "deployment.yaml").read_text()
    found = re.search(r"terminationGracePeriodSeconds:\s*(\d+)", text)
    if found is None:
        raise SystemExit("k8s/base/deployment.yaml: no terminationGracePeriodSeconds")
    return float(found.group(1))
