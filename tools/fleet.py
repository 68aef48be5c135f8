#!/usr/bin/env python3
"""A fleet of service instances behind real load balancers, and what clients see while it changes.

Everything runs on loopback: N instances of ``userprofile_service.py`` on one embedded store
(seeded once with loaddata.py), HAProxy from Debian in TCP mode (as kube-proxy or a cloud NLB:
connections pinned to an instance, no retries) and in HTTP mode (as an ingress), nginx with an
HTTP/1.1 keep-alive upstream pool, and clients of three kinds that keep their connections:

    check  checks a pooled connection before reusing it (readable means closed), as urllib3 does
    blind  reuses a connection idle under 4.9 s without any check, as JMeter's HttpClient4
           (validate_after_inactivity 4.9 s, retrycount 0); honours Connection: close
    hint   drops a pooled connection idle longer than the Keep-Alive: timeout=N hint minus 1 s,
           as Node's http.Agent; it also notices a close that has arrived, as Node does

The endpoint changes are made as a Kubernetes Deployment makes them (k8s/README.md): an
instance joins the balancer once its /readyz answers 200, leaves it 1 s after its replacement
joined, and gets SIGTERM after the 5 s preStop. HAProxy's servers change through its admin
socket; nginx gets a new configuration and SIGHUP, as an ingress controller does.

    python3 tools/fleet.py                      # every scenario, then the summary table
    python3 tools/fleet.py --only rolling idle   # some of them (names: see SCENARIOS)

tests/test_fleet.py runs the same scenarios and asserts the figures of k8s/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import os
import random
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROFILES = 1000  # ids 1..PROFILES in the store the fleet serves
PRESTOP_SECONDS = 5  # k8s/deployment.yaml's preStop sleep
ENDPOINT_DELAY_SECONDS = 1  # a new pod ready -> an old pod leaves the endpoints
BLIND_REUSE_SECONDS = 4.9  # HttpClient4's validate_after_inactivity in JMeter
KINDS = ("check", "blind", "hint")
REQUEST_TIMEOUT = 5.0  # a client's wait for an answer; longer counts as a failure


def log(msg: str) -> None:
    print(f"fleet: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


# -- the service ---------------------------------------------------------------------------------
def seed_store(workdir: Path, token: str) -> Path:
    db = workdir / "userprofile.db"
    env = {**os.environ, "USERPROFILE_DB": str(db)}
    env.pop("COUCHBASE_HOST", None)
    subprocess.run([sys.executable, str(ROOT / "loaddata.py"), "--count", str(PROFILES), "--seed", "1",
                    "--token", token], env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    return db


class Instance:
    """One service process, as a pod runs it, on a loopback port."""

    def __init__(self, name: str, db: Path, workdir: Path, env: dict | None = None):
        self.name, self.port = name, free_port()
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
                env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 30) -> Instance:
        """Until /readyz answers 200, as the readiness probe waits (polled faster than the kubelet)."""
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
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int:
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


# -- load balancers ------------------------------------------------------------------------------
class HAProxy:
    """Debian's haproxy in the foreground; servers come and go through the admin socket."""

    SLOTS = 16  # server lines declared up front, in maintenance until an instance takes one

    def __init__(self, workdir: Path, mode: str):
        self.mode, self.name = mode, f"haproxy-{mode}"
        self.dir = workdir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.sock = free_port(), self.dir / "admin.sock"
        self.slots: dict[str, str] = {}  # instance name -> server name
        self.proc: subprocess.Popen | None = None

    def config(self) -> str:
        if self.mode == "tcp":
            # As kube-proxy or an NLB: a connection is pinned to one instance, never retried
            # elsewhere, and no idle timeout of its own cuts it.
            mode = "    mode tcp\n    retries 0\n    timeout client 1h\n    timeout server 1h\n"
        else:
            # As an ingress: HTTP/1.1 keep-alive on both sides, each request balanced on its own,
            # idle backend connections reused; the default retry of a failed connect.
            mode = ("    mode http\n    option http-keep-alive\n    timeout client 65s\n    timeout server 30s\n"
                    "    timeout http-keep-alive 65s\n")
        servers = "".join(f"    server s{i} 127.0.0.1:9 disabled\n" for i in range(1, self.SLOTS + 1))
        return (f"global\n    stats socket {self.sock} level admin\n    maxconn 4096\n"
                f"defaults\n{mode}    timeout connect 2s\n"
                f"frontend fe\n    bind 127.0.0.1:{self.port}\n    default_backend be\n"
                f"backend be\n    balance roundrobin\n{servers}")

    def start(self, instances) -> HAProxy:
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(self.config())
        with open(self.dir / "haproxy.log", "ab") as out:
            self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc, self.name)
        deadline = time.monotonic() + 10
        while not self.sock.exists() and time.monotonic() < deadline:  # bound a moment after the port
            time.sleep(0.02)
        for inst in instances:
            self.add(inst)
        return self

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.sock))
            s.sendall(line.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def add(self, inst: Instance) -> None:
        server = next(f"s{i}" for i in range(1, self.SLOTS + 1) if f"s{i}" not in self.slots.values())
        self.slots[inst.name] = server
        self.command(f"set server be/{server} addr 127.0.0.1 port {inst.port}")
        self.command(f"set server be/{server} state ready")

    def remove(self, inst: Instance) -> None:
        # Maintenance: no new connection (TCP) or request (HTTP) goes there; in TCP mode the
        # connections already pinned stay, as conntrack keeps them after an endpoint leaves.
        self.command(f"set server be/{self.slots.pop(inst.name)} state maint")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Nginx:
    """Debian's nginx-light with an HTTP/1.1 keep-alive upstream pool, reloaded on every change."""

    name = "nginx"

    def __init__(self, workdir: Path, max_fails: int | None = 0):
        self.dir = workdir / "nginx"
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.max_fails = max_fails  # None: nginx's default (max_fails=1 fail_timeout=10s)
        self.members: dict[str, int] = {}
        self.proc: subprocess.Popen | None = None
        self.error_log = self.dir / "error.log"

    def config(self) -> str:
        fails = "" if self.max_fails is None else f" max_fails={self.max_fails}"
        servers = "".join(f"        server 127.0.0.1:{port}{fails};\n" for port in self.members.values())
        tmp = self.dir / "tmp"
        user = "user root root;\n" if os.geteuid() == 0 else ""
        return (f"{user}daemon off;\nmaster_process on;\nworker_processes 1;\npid {self.dir}/nginx.pid;\n"
                f"error_log {self.error_log} notice;\nevents {{ worker_connections 2048; }}\n"
                f"http {{\n    access_log off;\n"
                + "".join(f"    {kind}_temp_path {tmp}/{kind};\n"
                          for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
                + f"    upstream service {{\n{servers}        keepalive 32;\n    }}\n"
                f"    server {{\n        listen 127.0.0.1:{self.port};\n        keepalive_timeout 65s;\n"
                f"        location / {{\n            proxy_pass http://service;\n"
                f"            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n"
                f"        }}\n    }}\n}}\n")

    def write(self) -> None:
        (self.dir / "nginx.conf").write_text(self.config())

    def start(self, instances) -> Nginx:
        self.members = {inst.name: inst.port for inst in instances}
        self.write()
        with open(self.dir / "nginx.out", "ab") as out:
            self.proc = subprocess.Popen(
                ["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-e", str(self.error_log)],
                stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc, self.name)
        return self

    def reload(self) -> None:
        """A new configuration and SIGHUP, then wait until the new worker runs."""
        self.write()
        before = self.error_log.read_text(errors="replace").count("start worker process")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.error_log.read_text(errors="replace").count("start worker process") > before:
                return
            time.sleep(0.02)
        raise RuntimeError(f"nginx did not reload: {self.error_log.read_text()[-2000:]}")

    def add(self, inst: Instance) -> None:
        self.members[inst.name] = inst.port
        self.reload()

    def remove(self, inst: Instance) -> None:
        del self.members[inst.name]
        self.reload()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class DelayProxyProcess:
    """The DelayProxy in a process of its own: the clients' threads here would delay its loop."""

    def __init__(self, target_port: int, delay: float = 0.05):
        self.cmd = [sys.executable, __file__, "--delay-proxy", str(target_port), "--delay", str(delay)]
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> DelayProxyProcess:
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            self.port = int(self.proc.stdout.readline())
        except ValueError:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("the delaying proxy did not start") from None
        return self

    def stop(self) -> None:
        self.proc.stdin.close()  # the proxy serves until its standard input ends
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def serve_delay_proxy(target_port: int, delay: float) -> None:
    proxy = DelayProxy(target_port, delay).start()
    print(proxy.port, flush=True)
    sys.stdin.read()
    proxy.stop()


def make_balancer(kind: str, workdir: Path):
    return Nginx(workdir) if kind == "nginx" else HAProxy(workdir, kind.removeprefix("haproxy-"))


class DelayProxy:
    """A TCP proxy adding a fixed delay each way (a network with 2 x delay round trip).

    An end-of-stream and a reset travel with the same delay as data, in order.
    """

    def __init__(self, target_port: int, delay: float = 0.05):
        self.target_port, self.delay = target_port, delay
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="delay-proxy", daemon=True)
        self.server: asyncio.AbstractServer | None = None

    def start(self) -> DelayProxy:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self.handle, "127.0.0.1", 0), self.loop).result(5)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    @staticmethod
    def reset(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    async def pipe(self, reader, writer, other_writer) -> None:
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver():
            while True:
                due, item = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                try:
                    if item == "reset":
                        self.reset(writer)
                        return
                    if item is None:
                        if writer.can_write_eof():
                            writer.write_eof()
                        return
                    writer.write(item)
                    await writer.drain()
                except OSError:
                    # The far side reset: so does this proxy toward the near side, after the delay.
                    await asyncio.sleep(self.delay)
                    self.reset(other_writer)
                    return

        task = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + self.delay, data))
            queue.put_nowait((loop.time() + self.delay, None))
        except OSError:
            queue.put_nowait((loop.time() + self.delay, "reset"))
        try:
            await task
        finally:
            task.cancel()

    async def handle(self, client_reader, client_writer) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            self.reset(client_writer)
            return
        try:
            await asyncio.gather(self.pipe(client_reader, server_writer, client_writer),
                                 self.pipe(server_reader, client_writer, server_writer), return_exceptions=True)
        except asyncio.CancelledError:
            pass  # the proxy stops: a handler ends quietly (asyncio logs a cancelled one as an error)
        finally:
            for w in (client_writer, server_writer):
                w.close()


# -- clients -------------------------------------------------------------------------------------
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

    def __init__(self, kind: str, port: int, token: str, connections: int = 16, rate: float = 200,
                 pauses: list[list[float]] | None = None, label: str = ""):
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
        outcome = Outcome(start, (time.monotonic() - start) * 1000, "ok" if status == 200 else f"HTTP {status}",
                          reused, close, idle)
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
        self.cmd = [sys.executable, __file__, "--client", kind, "--port", str(port),
                    "--connections", str(connections), "--rate", str(rate)]
        self.proc: subprocess.Popen | None = None

    def start(self) -> ClientProcess:
        env = {**os.environ, "FLEET_TOKEN": self.token}  # never on a command line, where ps shows it
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        if self.proc.stdout.readline().strip() != "started":
            self.abort()
            raise RuntimeError(f"client {self.label} did not start")
        return self

    def stop(self) -> list[Outcome]:
        """Ends the load (its standard input closes) and reads every request's outcome."""
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


# -- results -------------------------------------------------------------------------------------
def p99(outcomes: list[Outcome]) -> float:
    ms = sorted(o.ms for o in outcomes if o.result == "ok")
    return ms[max(0, math.ceil(0.99 * len(ms)) - 1)] if ms else math.nan


L7 = ("haproxy-http", "nginx")
STEADY_WINDOW = 5  # seconds before a change whose latencies are the steady state


@dataclass
class Row:
    scenario: str
    balancer: str
    client: str
    requests: int
    failures: dict[str, int]  # failure kind -> count
    reused_failures: int = 0  # of them, on a reused connection
    close_answers: int = 0  # answers that carried Connection: close
    p99_steady: float = math.nan
    p99_change: float = math.nan
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def balancer_side(self) -> int:
        """Failures of the client's connection to an L7 balancer: the balancer's own doing.

        Behind an L7 balancer the service never holds the client's connection; whatever goes
        wrong toward the service reaches the client as a 5xx answer (a "HTTP ..." failure).
        """
        return sum(n for k, n in self.failures.items() if not k.startswith("HTTP ")) if self.balancer in L7 else 0

    @property
    def service_side(self) -> int:
        return self.failed - self.balancer_side


def row(scenario: str, balancer: str, client: str, outcomes: list[Outcome], change_start: float,
        change_end: float = math.inf, note: str = "", steady: list[Outcome] | None = None, **extra) -> Row:
    """Failures over all of outcomes; p99 in the steady seconds before change_start against the change."""
    failures: dict[str, int] = {}
    for o in outcomes:
        if o.result != "ok":
            failures[o.result] = failures.get(o.result, 0) + 1
    if steady is None:
        steady = [o for o in outcomes if change_start - STEADY_WINDOW <= o.start < change_start]
    change = [o for o in outcomes if change_start <= o.start <= change_end]
    return Row(scenario, balancer, client, len(outcomes), failures,
               sum(1 for o in outcomes if o.result != "ok" and o.reused), sum(1 for o in outcomes if o.close),
               p99(steady), p99(change), note, extra)


def table(rows: list[Row]) -> str:
    lines = ["| scenario | balancer | client | requests | failed | failures by kind | p99 steady ms "
             "| p99 during ms | answers with Connection: close | note |",
             "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | --- |"]
    for r in rows:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(r.failures.items())) or "-"
        if r.reused_failures:
            kinds += f" ({r.reused_failures} on reused connections)"
        if r.balancer_side:
            kinds += f"; {r.balancer_side} of them on the client's connection to {r.balancer} itself"
        fmt = lambda v: "-" if math.isnan(v) else f"{v:.1f}"  # noqa: E731
        lines.append(f"| {r.scenario} | {r.balancer} | {r.client} | {r.requests:,} | {r.failed} | {kinds} | "
                     f"{fmt(r.p99_steady)} | {fmt(r.p99_change)} | {r.close_answers:,} | {r.note} |")
    return "\n".join(lines)


# -- scenarios -----------------------------------------------------------------------------------
class Fleet:
    """Instances and the balancers in front of them, changed together as endpoints change."""

    def __init__(self, name: str, db: Path, workdir: Path, balancers: list[str], size: int,
                 env: dict | None = None):
        self.name, self.db, self.env = name, db, env or {}
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self.instances: list[Instance] = []  # in the endpoints
        self.leaving: list[Instance] = []
        self.terminators: list[threading.Thread] = []
        self.balancers: list = []
        try:
            for _ in range(size):
                self.instances.append(self.new())
            for inst in self.instances:
                inst.wait_ready()
            for b in balancers:
                self.balancers.append(make_balancer(b, self.dir))
                self.balancers[-1].start(self.instances)
        except BaseException:
            self.stop()  # nothing is left running when the fleet cannot start
            raise
        self.by_name = {b.name: b for b in self.balancers}

    def new(self) -> Instance:
        self.count += 1
        return Instance(f"{self.name}-{self.count}", self.db, self.dir, self.env).start()

    def scale_up(self) -> Instance:
        """A new pod: started, ready, then in the endpoints."""
        inst = self.new().ready_or_stop()
        self.instances.append(inst)
        for b in self.balancers:
            b.add(inst)
        return inst

    def retire(self, inst: Instance, grace: float) -> None:
        """Out of the endpoints now, SIGTERM after the preStop, SIGKILL after the grace period."""
        self.instances.remove(inst)
        self.leaving.append(inst)
        for b in self.balancers:
            b.remove(inst)

        def terminate():
            time.sleep(PRESTOP_SECONDS)
            inst.terminate()
            inst.wait_exit(grace)

        t = threading.Thread(target=terminate, name=f"terminate-{inst.name}", daemon=True)
        t.start()
        self.terminators.append(t)

    def wait_retired(self) -> None:
        for t in self.terminators:
            t.join()
        self.terminators.clear()

    def rolling_restart(self, grace: float) -> None:
        """maxSurge 1, maxUnavailable 0: a new pod ready, an old one out 1 s later, and on."""
        for old in list(self.instances):
            self.scale_up()
            time.sleep(ENDPOINT_DELAY_SECONDS)
            self.retire(old, grace)
        self.wait_retired()

    def exit_codes(self) -> dict[str, int | None]:
        return {inst.name: inst.exit_code for inst in self.leaving}

    def drain_seconds(self) -> float:
        """The longest time from SIGTERM to exit among the instances that left."""
        return max((inst.exit_at - inst.term_at for inst in self.leaving), default=math.nan)

    def stop(self) -> None:
        for b in self.balancers:
            with contextlib.suppress(Exception):
                b.stop()
        for inst in self.instances + self.leaving:
            with contextlib.suppress(Exception):
                inst.stop()


def grace_seconds() -> float:
    """terminationGracePeriodSeconds of k8s/deployment.yaml: the kubelet's SIGKILL comes after it."""
    text = (ROOT / "k8s" / "deployment.yaml").read_text()
    return float(re.search(r"terminationGracePeriodSeconds:\s*(\d+)", text).group(1))


def jmeter_plan(workdir: Path, rate: float) -> Path:
    """The plan in jmeter/, with a Constant Throughput Timer added: `rate` requests/s in all,
    so that JMeter shares the machine with the fleet instead of taking all of it."""
    timer = ('<ConstantThroughputTimer guiclass="TestBeanGUI" testclass="ConstantThroughputTimer" '
             'testname="fleet pacing"><intProp name="calcMode">1</intProp>'
             f'<doubleProp><name>throughput</name><value>{rate * 60:.1f}</value><savedValue>0.0</savedValue>'
             '</doubleProp></ConstantThroughputTimer>\n        <hashTree/>\n        ')
    text = (ROOT / "jmeter" / "userprofile.jmx").read_text()
    marker = "<HTTPSamplerProxy "
    assert text.count(marker) == 1
    plan = workdir / "userprofile-paced.jmx"
    plan.write_text(text.replace(marker, timer + marker))
    return plan


class JMeter:
    """JMeter (the project's plan, HttpClient4) as a client of a balancer, in the background."""

    def __init__(self, workdir: Path, port: int, token: str, duration: int, threads: int = 16, rate: float = 200):
        sys.path.insert(0, str(ROOT / "jmeter"))
        import loadtest  # the runner of `make loadtest`: its installer and its .jtl summary

        self.loadtest = loadtest
        self.jtl = workdir / "jmeter.jtl"
        props = workdir / "jmeter.properties"  # the token in a private file, never on a command line
        props.touch(mode=0o600)
        props.write_text(f"token={token}\nhost=127.0.0.1\nport={port}\nthreads={threads}\n"
                         f"duration={duration}\nmaxid={PROFILES}\n")
        self.cmd = ["java", "-Xms128m", "-Xmx512m", "-jar", str(loadtest.jmeter_jar()), "-n",
                    "-t", str(jmeter_plan(workdir, rate)), "-l", str(self.jtl), "-j", str(workdir / "jmeter.log"),
                    "-q", str(props), "-Jjmeter.save.saveservice.output_format=csv",
                    "-Jjmeter.save.saveservice.print_field_names=true", "-Jjmeterengine.nongui.port=0",
                    "-Jsummariser.out=false"]
        self.duration, self.workdir = duration, workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> JMeter:
        with open(self.workdir / "jmeter.out", "ab") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT)
        return self

    def first_sample(self, timeout: float = 60) -> None:
        """JMeter takes seconds to start: wait for its first results."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.jtl.exists() and self.jtl.read_text().count("\n") > 50:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"JMeter exited with {self.proc.returncode}")
            time.sleep(0.2)
        raise RuntimeError("JMeter wrote no samples")

    def finish(self) -> dict:
        self.proc.wait(self.duration + 120)
        summary = self.loadtest.summarise(self.jtl)
        summary["error_kinds"] = {}
        import csv
        with open(self.jtl, newline="") as f:
            for r in csv.DictReader(f):
                if r["success"] != "true":
                    kind = f'{r["responseCode"]} {r["responseMessage"]}'.splitlines()[0][:80]
                    summary["error_kinds"][kind] = summary["error_kinds"].get(kind, 0) + 1
        return summary


def scenario_rolling(workdir: Path, db: Path, token: str, rate: float, balancers: list[str],
                     with_jmeter: bool, steady: float = 8) -> list[Row]:
    """A rolling restart of 4 instances under every client kind through every balancer at once."""
    fleet = Fleet("rolling", db, workdir, balancers, 4)
    clients: list[tuple[str, Client]] = []
    jmeter = None
    try:
        if with_jmeter:
            jmeter = JMeter(fleet.dir, fleet.by_name["haproxy-tcp"].port, token, duration=int(steady + 60)).start()
            jmeter.first_sample()
        for b in fleet.balancers:
            for kind in KINDS:
                client = ClientProcess(kind, b.port, token, rate=rate, label=f"{b.name}/{kind}")
                clients.append((b.name, client.start()))
        time.sleep(steady)
        change_start = time.monotonic()
        log(f"rolling: restart begins ({len(clients)} client groups)")
        fleet.rolling_restart(grace_seconds())
        change_end = time.monotonic()
        log(f"rolling: restart done in {change_end - change_start:.1f} s; exit codes {fleet.exit_codes()}")
        time.sleep(2)
        drained = (f"exit codes {sorted(set(fleet.exit_codes().values()))}, "
                   f"drained in {fleet.drain_seconds():.1f} s at most")
        rows = [row("rolling restart", name, c.kind, c.stop(), change_start, change_end, note=drained,
                    exit_codes=fleet.exit_codes()) for name, c in clients]
        if jmeter:
            s = jmeter.finish()
            kinds = s["error_kinds"]
            rows.append(Row("rolling restart", "haproxy-tcp", "JMeter (HttpClient4)", s["samples"], kinds,
                            p99_change=s["p99_ms"], note="p99 over the whole run (JMeter counts whole ms)",
                            extra={"exit_codes": fleet.exit_codes()}))
        return rows
    finally:
        for _, c in clients:
            c.abort()
        if jmeter and jmeter.proc.poll() is None:
            jmeter.proc.terminate()
        fleet.stop()


def scenario_scale(workdir: Path, db: Path, token: str, rate: float, steady: float = 5,
                   settle: float = 30, window: float = 30) -> list[Row]:
    """Scale-out 2 -> 4 under load on L4, the new instances' share; then scale-in 4 -> 2."""
    fleet = Fleet("scale", db, workdir, ["haproxy-tcp"], 2)
    client = ClientProcess("blind", fleet.balancers[0].port, token, rate=rate, label="scale/blind")
    try:
        client.start()
        time.sleep(steady)
        out_start = time.monotonic()
        new = [fleet.scale_up(), fleet.scale_up()]
        ready = time.monotonic()
        log("scale: 2 -> 4 done; waiting for the share window")
        time.sleep(settle)
        before = {i.name: i.served() for i in fleet.instances}
        time.sleep(window)
        after = {i.name: i.served() for i in fleet.instances}
        served = {name: after[name] - before[name] for name in after}
        share = sum(served[i.name] for i in new) / max(1, sum(served.values()))
        in_start = time.monotonic()
        # The two first instances: whatever the recycling did, they hold client connections, so
        # what is measured is the drain of pinned connections (the ReplicaSet's own choice, by
        # time ready in log2 buckets and pod-deletion-cost, can be either pair).
        for inst in fleet.instances[:2]:
            fleet.retire(inst, grace_seconds())
        fleet.wait_retired()
        in_end = time.monotonic()
        time.sleep(2)
        outcomes = client.stop()
        out = [o for o in outcomes if o.start < in_start]
        inside = [o for o in outcomes if o.start >= in_start]
        return [
            row("scale-out 2 -> 4", "haproxy-tcp", "blind", out, out_start, ready + settle + window,
                note=f"new instances served {share:.0%} ({sum(served[i.name] for i in new):,.0f} of "
                     f"{sum(served.values()):,.0f}) in the {window:.0f} s from {settle:.0f} s after ready",
                share=share),
            row("scale-in 4 -> 2", "haproxy-tcp", "blind", inside, in_start, in_end,
                steady=[o for o in out if o.start >= in_start - steady],
                note=f"exit codes {sorted(set(fleet.exit_codes().values()))}, drained in "
                     f"{fleet.drain_seconds():.1f} s at most", exit_codes=fleet.exit_codes()),
        ]
    finally:
        client.abort()
        fleet.stop()


def scenario_idle_race(workdir: Path, db: Path, token: str, idle: float = 3, delay: float = 0.05,
                       connections: int = 12, per_connection: int = 12) -> list[Row]:
    """Requests after pauses swept across the server's idle timeout, through 2 x 50 ms of network."""
    d = workdir / "idle"
    d.mkdir(parents=True, exist_ok=True)
    inst = Instance("idle-1", db, d, {"IDLE_TIMEOUT_SECONDS": str(idle)}).start().ready_or_stop()
    try:
        proxy = DelayProxyProcess(inst.port, delay).start()
    except BaseException:
        inst.stop()
        raise
    try:
        # Pauses spread evenly over idle +- 0.4 s (a low-discrepancy sweep, the same for both kinds).
        n = connections * per_connection
        sweep = [idle - 0.4 + 0.8 * ((k * 0.6180339887) % 1) for k in range(n)]
        pauses = [[0.0] + sweep[i * per_connection:(i + 1) * per_connection] for i in range(connections)]
        clients = [Client(kind, proxy.port, token, connections=connections, rate=0, pauses=pauses,
                          label=f"idle/{kind}").start() for kind in ("hint", "check")]
        for c in clients:
            for t in c.threads:
                t.join(per_connection * (idle + 1) + 30)
        rows = []
        for c in clients:
            outcomes = c.stop()[connections:]  # less each connection's first request
            failed_idle = sorted(round(o.idle, 3) for o in outcomes if o.result != "ok")
            where = f"; failed at idle {failed_idle[0]:.2f}..{failed_idle[-1]:.2f} s" if failed_idle else ""
            rows.append(row("idle race", f"{delay * 1000:.0f} ms proxy", c.kind, outcomes, 0, math.inf,
                            note=f"IDLE_TIMEOUT_SECONDS={idle:g}; pauses {idle - 0.4:g}..{idle + 0.4:g} s{where}",
                            failed_idle=failed_idle, idle_timeout=idle, delay=delay))
        return rows
    finally:
        proxy.stop()
        inst.stop()


def scenario_pipelining(workdir: Path, db: Path, token: str, write_timeout: float = 2, connections: int = 2,
                        send_for: float = 10) -> list[Row]:
    """Clients that pipeline requests and never read: how long until the service lets them go."""
    d = workdir / "pipelining"
    d.mkdir(parents=True, exist_ok=True)
    inst = Instance("pipe-1", db, d, {"WRITE_TIMEOUT_SECONDS": str(write_timeout)}).start().ready_or_stop()
    try:
        served_before = inst.served()
        request = f"GET /api/v1/id/7 HTTP/1.1\r\nHost: fleet\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        batch = request * 64
        socks = [socket.create_connection(("127.0.0.1", inst.port)) for _ in range(connections)]
        for s in socks:
            s.setblocking(False)
        start = time.monotonic()
        sent = [0] * connections
        open_ = set(range(connections))
        released_at = math.nan
        # Send whenever a socket takes more, for at most send_for seconds or until the service closes.
        while open_ and time.monotonic() - start < send_for:
            _, writable, _ = select.select([], [socks[i] for i in open_], [], 0.05)
            for s in writable:
                i = socks.index(s)
                try:
                    sent[i] += s.send(batch) // len(request)
                except OSError:
                    open_.discard(i)
        stopped_sending = time.monotonic()
        # Connections open on the service, less the one asking: polled until none is left.
        while time.monotonic() - start < send_for + write_timeout + 20:
            if metric(inst.metrics(), "userprofile_connections_open") <= 1:
                released_at = time.monotonic()
                break
            time.sleep(0.1)
        answered = inst.served() - served_before
        for s in socks:
            s.close()
        release = released_at - start
        return [Row("pipelining, never reading", "direct", f"{connections} connections", int(answered), {},
                    note=f"WRITE_TIMEOUT_SECONDS={write_timeout:g}: released {release:.1f} s after the first "
                         f"request ({released_at - stopped_sending:+.1f} s after the last was sent); "
                         f"{answered / connections:,.0f} answers per connection, of {sum(sent):,} requests sent",
                    extra={"release_seconds": release, "answers_per_connection": answered / connections,
                           "write_timeout": write_timeout})]
    finally:
        inst.stop()


def scenario_nginx_reloads(workdir: Path, db: Path, token: str, rate: float, reloads: int = 8) -> list[Row]:
    """The control for nginx: as many reloads as a rolling restart of 4 makes, nothing else changed."""
    fleet = Fleet("reloads", db, workdir, ["nginx"], 4)
    nginx = fleet.balancers[0]
    clients = [ClientProcess(kind, nginx.port, token, rate=rate, label=f"reloads/{kind}") for kind in KINDS]
    try:
        for c in clients:
            c.start()
        time.sleep(STEADY_WINDOW)
        change_start = time.monotonic()
        for _ in range(reloads):
            nginx.reload()
            time.sleep(ENDPOINT_DELAY_SECONDS)
        change_end = time.monotonic()
        time.sleep(2)
        return [row("nginx reloads alone", "nginx", c.kind, c.stop(), change_start, change_end,
                    note=f"{reloads} reloads, the same servers") for c in clients]
    finally:
        for c in clients:
            c.abort()
        fleet.stop()


SCENARIOS = ("rolling", "scale", "idle", "pipelining", "jmeter", "reloads")


BALANCERS = ("haproxy-tcp", "haproxy-http", "nginx")


def run(only=SCENARIOS, rate: float = 200, balancers=BALANCERS,
        workdir: Path | None = None) -> list[Row]:
    """The scenarios asked for, those that do not disturb each other at the same time."""
    for tool in ("haproxy", "nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"fleet: {tool} is not installed (tools/install_fleet.sh)")
    own_dir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="fleet-")) if own_dir else workdir
    token = secrets.token_hex(16)
    db = seed_store(workdir, token)
    results: dict[str, list[Row]] = {}
    errors: list[BaseException] = []

    def job(name, fn, *args, **kwargs):
        def target():
            try:
                results[name] = fn(*args, **kwargs)
            except BaseException as exc:  # reported after the others have finished
                errors.append(exc)
                log(f"{name}: {exc!r}")
        t = threading.Thread(target=target, name=name)
        t.start()
        return t

    jobs = []
    if "rolling" in only or "jmeter" in only:
        behind = list(balancers) if "rolling" in only else []
        if "jmeter" in only and "haproxy-tcp" not in behind:
            behind.insert(0, "haproxy-tcp")  # JMeter's balancer
        jobs.append(job("rolling", scenario_rolling, workdir, db, token, rate, behind, "jmeter" in only))
    if "scale" in only:
        jobs.append(job("scale", scenario_scale, workdir, db, token, rate))
    if "idle" in only:
        jobs.append(job("idle", scenario_idle_race, workdir, db, token))
    if "pipelining" in only or "reloads" in only:
        for t in jobs[:1]:  # after the rolling restart's latencies are measured
            t.join()
        jobs.append(job("pipelining", scenario_pipelining, workdir, db, token))
    if "reloads" in only:
        jobs.append(job("reloads", scenario_nginx_reloads, workdir, db, token, rate))
    for t in jobs:
        t.join()
    if errors:
        raise errors[0]
    if own_dir:
        shutil.rmtree(workdir, ignore_errors=True)
    return [r for name in ("rolling", "reloads", "scale", "idle", "pipelining") for r in results.get(name, [])]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument("--rate", type=float, default=200, help="requests/s of each client group (default 200)")
    p.add_argument("--balancers", nargs="+", choices=BALANCERS, default=list(BALANCERS),
                   help="the balancers of the rolling restart (default all three, at once)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    p.add_argument("--delay-proxy", type=int, metavar="PORT", help=argparse.SUPPRESS)  # DelayProxyProcess
    p.add_argument("--delay", type=float, default=0.05, help=argparse.SUPPRESS)
    p.add_argument("--client", choices=KINDS, help=argparse.SUPPRESS)  # ClientProcess
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--connections", type=int, default=16, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client:
        serve_client(args.client, args.port, args.connections, args.rate)
        return 0
    if args.delay_proxy:
        serve_delay_proxy(args.delay_proxy, args.delay)
        return 0
    started = time.monotonic()
    rows = run(args.only, args.rate, args.balancers)
    print(table(rows))
    print(f"\n{time.monotonic() - started:.0f} s in all; `make fleet` (tools/fleet.py)")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
