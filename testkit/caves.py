"""Drive CAVES, Couchbase's cluster emulator for SDK tests, over its control socket.

CAVES is started as SDK test suites start it: the test listens on a port, runs
``gocaves --control-port=PORT``, and CAVES connects back. Messages both ways are
JSON objects terminated by a NUL byte; CAVES speaks first (``hello``). CAVES
exits when the control connection closes, so the socket stays open while the
cluster is in use.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOCAVES = ROOT / ".tools" / "bin" / "gocaves"
INSTALL_HINT = "gocaves is not installed: run tools/install_caves.sh (make test does it)"


def gocaves_path() -> Path:
    """The installed binary; a missing one fails the test, it is not a skip."""
    path = Path(os.environ.get("GOCAVES", GOCAVES))
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{INSTALL_HINT} (looked for {path})")
    return path


class Caves:
    """One gocaves process and its control connection."""

    def __init__(self, log_path: Path | None = None, timeout: float = 30):
        self.timeout = timeout
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.ctl: socket.socket | None = None
        self._buf = b""
        self.cluster_id = ""
        self.connstr = ""

    def start(self) -> Caves:
        binary = gocaves_path()
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            listener.settimeout(self.timeout)
            port = listener.getsockname()[1]
            log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115  # gocaves keeps it
            self.proc = subprocess.Popen(
                [str(binary), f"--control-port={port}"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            self.ctl, _ = listener.accept()
        self.ctl.settimeout(self.timeout)
        hello = self._recv()
        if hello.get("type") != "hello":
            raise RuntimeError(f"gocaves: expected hello, got {hello}")
        self.cluster_id = str(uuid.uuid4())
        created = self.command({"type": "createcluster", "id": self.cluster_id})
        self.connstr = created.get("connstr", "")
        if not self.connstr:
            raise RuntimeError(f"gocaves: createcluster failed: {created}")
        return self

    # -- control protocol -----------------------------------------------------
    def _recv(self) -> dict:
        assert self.ctl is not None, "start() first"
        while b"\0" not in self._buf:
            chunk = self.ctl.recv(65536)
            if not chunk:
                raise RuntimeError("gocaves closed its control connection")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def command(self, cmd: dict) -> dict:
        assert self.ctl is not None, "start() first"
        self.ctl.sendall(json.dumps(cmd).encode() + b"\0")
        return self._recv()

    def add_bucket(self, name: str, replicas: int = 0) -> None:
        """A couchbase bucket besides the ``default`` one CAVES creates."""
        self.command(
            {
                "type": "addbucket",
                "cluster": self.cluster_id,
                "name": name,
                "bucket_type": "couchbase",
                "replicas": replicas,
            }
        )

    # -- faults ---------------------------------------------------------------
    def freeze(self) -> None:
        """SIGSTOP: sockets stay open but nothing answers, like a hung node."""
        assert self.proc is not None, "start() first"
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None, "start() first"
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: connections are refused from now on."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process still dies, but be plain about it
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()
        if self.ctl:
            self.ctl.close()
            self.ctl = None

    def __enter__(self) -> Caves:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
