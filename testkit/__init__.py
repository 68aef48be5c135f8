"""What tests, tools, bench and jmeter share to run the service: the tree's root, a free port, the
service process as users start it, the loader, polling, ending a process, a connection writer that
keeps bytes and an empty store.

Installed with the project (pyproject.toml), so each imports it as ``testkit`` without touching
sys.path. Its modules, one harness piece each: ``caves`` (the Couchbase emulator and its SQL++
engine, loaded), ``jmeter`` (the plan, paced or not, a run in the background, its results),
``scrape`` (/metrics read back), ``pki`` (a CA and the certificates it signs), ``netns`` (an
``unshare -n`` driver), ``dns``, ``idp``, ``issuer`` and ``otelcol``.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self

import settings
from store import Layout, Page

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = Layout.of(settings.defaults())  # the collections' default names, as the tests load them


def free_port() -> int:
    """A loopback port nothing listens on now: helpers run servers side by side, never on fixed ports."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll until predicate() is truthy or timeout passes; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(interval)
    return predicate()


def end(proc: subprocess.Popen, timeout: float, sig: int = signal.SIGTERM) -> int:
    """Signal a process (SIGTERM unless told) and wait for it; SIGKILL when it outlasts timeout. Its exit
    code: negative, the signal that ended it (-9: killed)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def run_loaddata(env: Mapping[str, str | None], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """loaddata.py with these settings over the environment's (None unsets one, e.g. COUCHBASE_HOST for the
    embedded store); raises when it fails (CalledProcessError), its stderr written out first, where a
    failing test shows it."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "loaddata.py"), *args],
        env=environment(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode:
        sys.stderr.write(f"loaddata.py {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        done.check_returncode()
    return done


def environment(env: Mapping[str, str | None]) -> dict[str, str]:
    """This process's environment with these settings over it; a value of None unsets that variable."""
    merged = {**os.environ, **env}
    return {name: value for name, value in merged.items() if value is not None}


class BytesWriter:
    """A connection's writer (``connection.Writer``) that keeps what is written, for in-process tests."""

    def __init__(self) -> None:
        self.written = bytearray()

    def send_now(self, data: bytes) -> bytes:
        self.written += data
        return b""

    def send_all(self, data: bytes) -> None:
        self.written += data


class EmptyStore:
    """A ``store.Store`` that holds nothing and always answers: for tests where no lookup matters."""

    serial = False
    layout = LAYOUT

    def counters(self) -> dict[str, int]:
        return {}

    def get_profile(self, record_id: str) -> bytes | None:
        return None

    def find_by_nickname(self, nickname: str, after: int, limit: int) -> Page:
        return [], None

    def find_by_username(self, username: str, after: int, limit: int) -> Page:
        return [], None

    def get_image(self, record_id: str) -> bytes | None:
        return None

    def read_token(self) -> str | None:
        return None

    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __str__(self) -> str:
        return "an empty store"


class ServiceProcess:
    """The service started as users start it: ``python3 userprofile_service.py``, on a free port."""

    def __init__(
        self,
        env: Mapping[str, str | None],
        *args: str,
        log_path: Path | None = None,
        root: Path = ROOT,
        port: int | None = None,
    ):
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.root = root
        self.env = environment({"ACCESS_LOG": "true", **env})
        self.args = ["--host", self.host, "--port", str(self.port), *args]
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, wait_for: str = "/healthz", timeout: float = 30) -> Self:
        """Start it and wait until ``wait_for`` answers 200; raises, with its log, when it does not."""
        return self.launch().wait_answers(wait_for, timeout)

    def launch(self) -> Self:
        """Start it, without waiting: for callers that start several and then wait (wait_answers)."""
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115  # the process keeps it
        self.proc = subprocess.Popen(
            [sys.executable, str(self.root / "userprofile_service.py"), *self.args],
            env=self.env,
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def wait_answers(self, path: str = "/healthz", timeout: float = 30) -> Self:
        """Until ``path`` answers 200; stopped and raises, with its log, when it exits or does not in time."""
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}: {self.log()[-4000:]}")
            try:
                if self.get(path, timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"service did not answer 200 on {path} in {timeout}s: {self.log()[-4000:]}")

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def connection(self, timeout: float = 10) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def get(
        self, path: str, token: str | None = None, method: str = "GET", headers: dict | None = None, timeout: float = 10
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request on a new connection: (status, headers, body)."""
        conn = self.connection(timeout)
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
        """Signal it (SIGTERM: the drain) and wait for its exit code; killed (-9) when it outlasts timeout."""
        return end(self.proc, timeout, sig) if self.proc else 0
