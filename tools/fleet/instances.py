"""The fleet's service instances: processes of userprofile_service.py on loopback ports, one
embedded store seeded for them all, and the helpers every part of tools/fleet.py shares."""

from __future__ import annotations

import contextlib
import http.client
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from testkit import ROOT, free_port

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


def http_get(port: int, path: str, timeout: float = 2) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include the given ones."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key.partition("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in key for k, v in labels.items()):
            total += float(value)
    return total


def seed_store(workdir: Path, token: str) -> Path:
    db = workdir / "userprofile.db"
    env = {**os.environ, "USERPROFILE_DB": str(db)}
    env.pop("COUCHBASE_HOST", None)
    subprocess.run(
        [sys.executable, str(ROOT / "loaddata.py"), "--count", str(PROFILES), "--seed", "1", "--token", token],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return db


class Instance:
    """One service process, as a pod runs it, on a loopback port."""

    def __init__(self, name: str, db: Path, workdir: Path, env: dict | None = None, port: int | None = None):
        self.name, self.port = name, port or free_port()
        self.log_path = workdir / f"{name}.log"
        self.env = {**os.environ, "USERPROFILE_DB": str(db), "ACCESS_LOG": "false", **(env or {})}
        self.env.pop("COUCHBASE_HOST", None)
        self.proc: subprocess.Popen | None = None
        self.ready_at = self.term_at = self.exit_at = math.nan
        self.exit_code: int | None = None

    def start(self) -> Instance:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "userprofile_service.py"), "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self, timeout: float = 30) -> Instance:
        """Until /readyz answers 200, as the readiness probe waits (polled faster than the kubelet)."""
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_path.read_text()}")
            with contextlib.suppress(OSError):
                if http_get(self.port, "/readyz")[0] == 200:
                    self.ready_at = time.monotonic()
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} was not ready in {timeout} s")

    def ready_or_stop(self) -> Instance:
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def metrics(self) -> str:
        status, body = http_get(self.port, "/metrics")
        if status != 200:
            raise RuntimeError(f"{self.name}: /metrics answered {status}")
        return body.decode()

    def served(self) -> float:
        """Lookups this instance has answered (its own counter, as Prometheus would scrape it)."""
        return metric(self.metrics(), "userprofile_requests_total", route="/api/v1/id")

    def terminate(self) -> None:
        self.term_at = time.monotonic()
        assert self.proc is not None, "start() first"
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None, "start() first"
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # as the kubelet does at the end of terminationGracePeriodSeconds
            self.proc.wait()
            self.exit_code = -9
        self.exit_at = time.monotonic()
        return self.exit_code

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.terminate()
            self.wait_exit(30)


def grace_seconds() -> float:
    """terminationGracePeriodSeconds of k8s/base/deployment.yaml: the kubelet's SIGKILL comes after it."""
    text = (ROOT / "k8s" / "base" / "deployment.yaml").read_text()
    found = re.search(r"terminationGracePeriodSeconds:\s*(\d+)", text)
    if found is None:
        raise SystemExit("k8s/base/deployment.yaml: no terminationGracePeriodSeconds")
    return float(found.group(1))
