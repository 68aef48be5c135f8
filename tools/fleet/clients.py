"""The fleet's clients: three kinds of keep-alive HTTP client, paced, each request's outcome
recorded, and JMeter with the project's plan.

    check  checks a pooled connection before reusing it (readable means closed), as urllib3 does
    blind  reuses a connection idle under 4.9 s without any check, as JMeter's HttpClient4
           (validate_after_inactivity 4.9 s, retrycount 0); honours Connection: close
    hint   drops a pooled connection idle longer than the Keep-Alive: timeout=N hint minus 1 s,
           as Node's http.Agent; it also notices a close that has arrived, as Node does

    FLEET_TOKEN=... python3 -m tools.fleet.clients KIND --port PORT [--connections 16] [--rate 200]
        # prints "started", loads until stdin ends, then prints each outcome as a JSON line
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import select
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from testkit import ROOT, jmeter

from .instances import PROFILES

BLIND_REUSE_SECONDS = 4.9  # HttpClient4's validate_after_inactivity in JMeter
KINDS = ("check", "blind", "hint")
REQUEST_TIMEOUT = 5.0  # a client's wait for an answer; longer counts as a failure


class Closed(Exception):
    """The connection ended before a whole answer came."""


@dataclass
class Outcome:
    start: float
    ms: float
    result: str  # "ok", "HTTP 502", "refused", "reset", "closed before the answer", "timeout"
    reused: bool
    close: bool  # the answer carried Connection: close
    idle: float = math.nan  # how long the reused connection had been idle (s)


class Connection:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")
        self.last_used = time.monotonic()
        self.hint: float | None = None  # Keep-Alive: timeout=N

    def looks_closed(self) -> bool:
        """The stale check of urllib3 (wait_for_read with no wait): readable while idle means closed."""
        return bool(select.select([self.sock], [], [], 0)[0])

    def request(self, path: str, token: str) -> tuple[int, bool]:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: fleet\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        status_line = self.reader.readline(8192)
        if not status_line:
            raise Closed
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := self.reader.readline(8192)) not in (b"\r\n", b"\n"):
            if not line:
                raise Closed
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                length = int(value)
            elif name == "connection":
                close = "close" in value.lower()
            elif name == "keep-alive" and (m := re.search(r"timeout=(\d+)", value)):
                self.hint = float(m.group(1))
        if len(self.reader.read(length)) < length:
            raise Closed
        self.last_used = time.monotonic()
        return status, close

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
            self.sock.close()


def reusable(kind: str, conn: Connection) -> bool:
    idle = time.monotonic() - conn.last_used
    if kind == "blind" and idle < BLIND_REUSE_SECONDS:
        return True
    if kind == "hint" and conn.hint is not None and idle > conn.hint - 1:
        return False
    return not conn.looks_closed()


def classify(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, Closed):
        return "closed before the answer"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return f"error {type(exc).__name__}"


class Client:
    """One kind of client: `connections` keep-alive connections, each its own thread.

    Paced load: `rate` requests/s in all, spread evenly. Or, with `pauses`, each connection
    waits pauses[i] seconds of idleness before its i-th request (the idle race).
    """

    def __init__(
        self,
        kind: str,
        port: int,
        token: str,
        connections: int = 16,
        rate: float = 200,
        pauses: list[list[float]] | None = None,
        label: str = "",
    ):
        self.kind, self.port, self.token = kind, port, token
        self.connections, self.rate, self.pauses = connections, rate, pauses
        self.label = label or kind
        self.outcomes: list[Outcome] = []
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.rng = random.Random(hash(self.label) & 0xFFFF)

    def start(self) -> Client:
        for i in range(self.connections):
            t = threading.Thread(target=self.run, args=(i,), name=f"{self.label}-{i}", daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self) -> list[Outcome]:
        self.stopping.set()
        for t in self.threads:
            t.join(REQUEST_TIMEOUT + 5)
        return self.outcomes

    def one(self, conn: Connection | None) -> tuple[Connection | None, Outcome]:
        start = time.monotonic()
        reused = conn is not None
        idle = start - conn.last_used if conn is not None else math.nan
        path = f"/api/v1/id/{self.rng.randint(1, PROFILES)}"
        try:
            if conn is None:
                conn = Connection(self.port)
            status, close = conn.request(path, self.token)
        except (OSError, Closed, ValueError, IndexError) as exc:
            if conn is not None:
                conn.close()
            return None, Outcome(start, (time.monotonic() - start) * 1000, classify(exc), reused, False, idle)
        outcome = Outcome(
            start, (time.monotonic() - start) * 1000, "ok" if status == 200 else f"HTTP {status}", reused, close, idle
        )
        if close:
            conn.close()
            conn = None
        return conn, outcome

    def run(self, i: int) -> None:
        conn: Connection | None = None
        period = self.connections / self.rate if self.rate else 0
        due = time.monotonic() + period * i / self.connections
        pauses = iter(self.pauses[i]) if self.pauses else None
        while not self.stopping.is_set():
            if pauses is not None:
                pause = next(pauses, None)
                if pause is None:
                    break
                due = (conn.last_used if conn else time.monotonic()) + pause
            wait = due - time.monotonic()
            if wait > 0 and self.stopping.wait(wait):
                break
            if conn is not None and not reusable(self.kind, conn):
                conn.close()
                conn = None
            conn, outcome = self.one(conn)
            self.outcomes.append(outcome)
            due = max(due + period, time.monotonic() - period)  # a late request does not bunch up the next
        if conn is not None:
            conn.close()

    def abort(self) -> None:
        self.stopping.set()


class ClientProcess:
    """A paced Client in a process of its own, so that its latencies are the fleet's, not those
    of the interpreter lock shared with every other client group and the harness."""

    def __init__(self, kind: str, port: int, token: str, connections: int = 16, rate: float = 200, label: str = ""):
        self.kind, self.label, self.token = kind, label or kind, token
        self.cmd = [
            sys.executable,
            "-m",
            "tools.fleet.clients",
            kind,
            "--port",
            str(port),
            "--connections",
            str(connections),
            "--rate",
            str(rate),
        ]
        self.proc: subprocess.Popen | None = None

    def start(self) -> ClientProcess:
        env = {**os.environ, "FLEET_TOKEN": self.token}  # never on a command line, where ps shows it
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, cwd=ROOT
        )
        assert self.proc.stdout is not None  # stdout=PIPE
        if self.proc.stdout.readline().strip() != "started":
            self.abort()
            raise RuntimeError(f"client {self.label} did not start")
        return self

    def stop(self) -> list[Outcome]:
        """Ends the load (its standard input closes) and reads every request's outcome."""
        assert self.proc is not None, "start() first"
        out, _ = self.proc.communicate(input="", timeout=REQUEST_TIMEOUT + 30)
        return [Outcome(*json.loads(line)) for line in out.splitlines() if line]

    def abort(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def serve_client(kind: str, port: int, connections: int, rate: float) -> None:
    client = Client(kind, port, os.environ["FLEET_TOKEN"], connections, rate).start()
    print("started", flush=True)
    sys.stdin.read()
    for o in client.stop():
        print(json.dumps([o.start, o.ms, o.result, o.reused, o.close, o.idle]))


def jmeter_client(
    workdir: Path, port: int, token: str, duration: int, threads: int = 16, rate: float = 200
) -> jmeter.Background:
    """JMeter (the project's plan, HttpClient4, paced at ``rate`` requests/s) as a client of a balancer."""
    properties = {"token": token, "host": "127.0.0.1", "port": port, "threads": threads, "duration": duration}
    return jmeter.Background(workdir, "jmeter", jmeter.paced_plan(workdir, rate), {**properties, "maxid": PROFILES})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="One kind of paced keep-alive client (the token in FLEET_TOKEN).")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--rate", type=float, default=200, help="requests/s in all (default 200)")
    args = p.parse_args(argv)
    serve_client(args.kind, args.port, args.connections, args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
