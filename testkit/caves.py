"""Drive CAVES, Couchbase's cluster emulator for SDK tests, over its control socket, and
Couchbase's own SQL++ engine beside it.

CAVES is started as SDK test suites start it: the test listens on a port, runs
``gocaves --control-port=PORT``, and CAVES connects back. Messages both ways are
JSON objects terminated by a NUL byte; CAVES speaks first (``hello``). CAVES
exits when the control connection closes, so the socket stays open while the
cluster is in use.

CAVES has no query engine of its own. ``QueryEngine`` runs cbq-engine (tools/install_cbq_engine.sh)
over a file datastore; a CAVES started with it hands every SQL++ request on its query port to
the engine (tools/caves/queryimplforward.go), after writing the documents of the request's
scope to the datastore. The SDK then reaches a real SQL++ engine exactly as on a cluster.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path

import settings
from testkit import ROOT, free_port, run_loaddata

GOCAVES = ROOT / ".tools" / "bin" / "gocaves"
INSTALL_HINT = "gocaves is not installed: run tools/install_caves.sh (make test does it)"
CBQ_ENGINE = ROOT / ".tools" / "bin" / "cbq-engine"
ENGINE_HINT = "cbq-engine is not installed: run tools/install_cbq_engine.sh (make test does it)"
# The emulator's one user (CAVES accepts these and no others). The service has no default
# credentials, so every test, tool and benchmark passes these, from here.
USER, PASSWORD = "Administrator", "password"
CREDENTIALS = {"COUCHBASE_USER": USER, "COUCHBASE_PASSWORD": PASSWORD}
BUCKET = settings.defaults().couchbase_bucket  # the bucket the service reads when none is configured


def installed(variable: str, default: Path, hint: str) -> Path:
    """An installed binary (its path from ``variable`` when set); a missing one fails the test, it is not a skip."""
    path = Path(os.environ.get(variable, default))
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{hint} (looked for {path})")
    return path


def gocaves_path() -> Path:
    return installed("GOCAVES", GOCAVES, INSTALL_HINT)


class Faults:
    """What a test does to a server process it started: freeze it, thaw it, kill it."""

    proc: subprocess.Popen | None = None

    def freeze(self) -> None:
        """SIGSTOP: its sockets stay open but nothing answers, like a hung node."""
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


def die_with_parent() -> None:
    """In the child, before exec: killed when the process that started it dies (Linux's
    PR_SET_PDEATHSIG; strictly, when the thread that started it ends: start it from one that
    outlives it), so a test killed mid-run leaves no engine behind (CAVES exits by itself when
    its control connection closes)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


class QueryEngine(Faults):
    """cbq-engine over a file datastore in ``datastore``, answering on a free loopback port.

    The file datastore reads its keyspaces (``datastore/default/<collection>/``) when it starts,
    so the collections the queries name are made first; only their documents are written there
    by CAVES. It has no buckets or scopes, no secondary indexes (every plan is a primary scan:
    ``CREATE INDEX`` answers error 15010) and accepts any credentials.
    """

    def __init__(self, datastore: Path, collections: Iterable[str], log_path: Path | None = None):
        self.datastore = datastore
        self.collections = tuple(collections)
        self.log_path = log_path
        self.port, self.tls_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/query/service"

    def caves_env(self) -> dict[str, str]:
        """What CAVES needs to forward its queries here."""
        return {"CAVES_QUERY_URL": self.url, "CAVES_QUERY_FILESTORE": str(self.datastore)}

    def start(self, timeout: float = 30) -> QueryEngine:
        binary = installed("CBQ_ENGINE", CBQ_ENGINE, ENGINE_HINT)
        for name in self.collections:
            (self.datastore / "default" / name).mkdir(parents=True, exist_ok=True)
        # Its diagnostics and spills go to $TMPDIR: beside the datastore, not the machine's /tmp.
        scratch = self.datastore.with_name(self.datastore.name + "-tmp")
        scratch.mkdir(exist_ok=True)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115  # the engine keeps it
        self.proc = subprocess.Popen(
            [
                str(binary),
                f"-datastore={self.datastore}",
                f"-http=127.0.0.1:{self.port}",
                f"-https=127.0.0.1:{self.tls_port}",
            ],
            env={**os.environ, "CBQ_STANDALONE": "1", "TMPDIR": str(scratch)},  # CBQ_STANDALONE: no cluster manager
            preexec_fn=die_with_parent,  # one call before the exec
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"cbq-engine did not answer on 127.0.0.1:{self.port} (log: {self.log_path})")
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/admin/ping", timeout=1) as resp:  # nosec B310  # a loopback http:// URL of ours
                return resp.status == 200
        except OSError:
            return False

    stop = Faults.kill  # nothing to close but the process

    def restart(self) -> QueryEngine:
        """Killed and started again on the same port: what it had prepared is gone."""
        self.stop()
        return self.start()


class Caves(Faults):
    """One gocaves process and its control connection; with ``engine``, its queries go there."""

    def __init__(self, log_path: Path | None = None, timeout: float = 30, engine: QueryEngine | None = None):
        self.timeout = timeout
        self.log_path = log_path
        self.engine = engine
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
                env={**os.environ, **(self.engine.caves_env() if self.engine else {})},
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

    def env(self, **more: str) -> dict[str, str]:
        """The settings of a service or loader on this cluster: its connection string and the
        emulator's credentials, then ``more`` (COUCHBASE_KV_TIMEOUT="1", ...)."""
        return {"COUCHBASE_HOST": self.connstr, **CREDENTIALS, **more}

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

    def add_bucket(self, name: str = BUCKET, replicas: int = 0) -> None:
        """A couchbase bucket besides the ``default`` one CAVES creates: the service's default one unless named."""
        self.command(
            {
                "type": "addbucket",
                "cluster": self.cluster_id,
                "name": name,
                "bucket_type": "couchbase",
                "replicas": replicas,
            }
        )

    def loaded(self, *loaddata_args: str, replicas: int = 0, **more: str) -> Caves:
        """The service's default bucket added, and loaddata.py run into it with these arguments and
        settings (``more`` over ``env()``'s): the one way tests, tools and bench load CAVES."""
        self.add_bucket(replicas=replicas)
        run_loaddata(self.env(**more), *loaddata_args)
        return self

    def stop(self) -> None:
        """CAVES, and its query engine if it has one."""
        self.kill()
        if self.engine:
            self.engine.stop()
        if self.ctl:
            self.ctl.close()
            self.ctl = None

    def __enter__(self) -> Caves:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
