"""The benchmarks' measuring (bench/run.py's command line drives it; ab.py, lookups.py and jwt_cost.py
use its pieces): the implementations and their stores, each server pinned to core 0 and wrk to core 1,
one measured run with its CPU times, listen-queue overflows and the machine's noise, and CAVES loaded
for the Couchbase runs."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from testkit import ROOT, free_port, run_loaddata

BENCH = ROOT / "bench"
IMPLS = {
    "ours": "ours (1 process, core 0)",
    "fastapi": "FastAPI + uvicorn (core 0)",
    "express": "Express 5 (core 0)",
    "ours-2w": "ours --workers 2 (both cores)",
    "ours-cb": "ours on CAVES (core 0)",
    "ours-cb-obs": "ours on CAVES, SDK tracing and metrics on (core 0)",
    "fastapi-cb": "FastAPI + acouchbase (core 0)",
    "express-cb": "Express 5 + couchbase (core 0)",
    "node-cb": "node:http + couchbase, no framework (core 0)",
}
COUCHBASE_IMPLS = ("ours-cb", "fastapi-cb", "express-cb", "node-cb", "ours-cb-obs")  # served from CAVES
CONNS = (1, 8, 32, 128, 512)
COUCHBASE_CONNS = (1, 8, 32, 128)
# The aims on Couchbase, as ratios of server CPU per request at 32 connections: ours at most this
# share of each peer's.
TARGETS = {"express-cb": 1 / 2.5, "fastapi-cb": 1 / 4, "node-cb": 0.8}
SERVER_CORE, WRK_CORE = "0", "1"
GENERATOR_BOUND = 0.90  # wrk busier than this share of its core: the generator was the limit
NOISY = 0.25  # other processes used more than this share of a core during a run: flag it
CLK_TCK = os.sysconf("SC_CLK_TCK")


def store_arguments(p: argparse.ArgumentParser) -> None:
    """The embedded store the benchmarks serve (also bench/ab.py's)."""
    p.add_argument("--db", default=str(ROOT / "data" / "bench.db"), help="SQLite store, seeded if missing")
    p.add_argument("--count", type=int, default=10000, help="profiles in the store (default 10000)")
    p.add_argument("--token", default="bench-token", help="token stored when seeding")


def python_argument(p: argparse.ArgumentParser) -> None:
    """The interpreter our service runs on (also bench/ab.py's): its environment must have requirements.txt."""
    p.add_argument(
        "--python",
        default=sys.executable,
        help="the Python our service runs on, e.g. .venv-3.13/bin/python (default: this one)",
    )


def python_version(python: str) -> str:
    return command_output([python, "-c", "import platform; print(platform.python_version())"])


def command_output(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip()
    except OSError:
        return "missing"


# -- the store -----------------------------------------------------------------
def stored_profiles(db: str) -> int:
    if not os.path.exists(db):
        return 0
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM user_data").fetchone()[0]
    except sqlite3.Error:
        return 0


def seed(db: str, count: int, token: str) -> str:
    """Fill the store with loaddata.py when it holds too few profiles; return the stored token."""
    if stored_profiles(db) < count:
        print(f"seeding {db} with {count} profiles", flush=True)
        # the benchmark's own file, topped up
        run_loaddata({"USERPROFILE_DB": db}, "--count", str(count), "--seed", "1", "--token", token, "--overwrite")
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT doc FROM service_auth WHERE key = 'service_auth:1'").fetchone()
    return json.loads(row[0])["token"]


# -- the servers ---------------------------------------------------------------
def service_sha(root: Path = ROOT) -> str:
    """One hash over the service's modules: a row measured with other code shows a different one."""
    digest = hashlib.sha256()
    for path in sorted(root.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def git_commit() -> str:
    out = command_output(["git", "-C", str(ROOT), "log", "-1", "--format=%h"])
    dirty = command_output(["git", "-C", str(ROOT), "status", "--porcelain", "--", "*.py", ":!bench", ":!tests"])
    return out + (" (with uncommitted changes)" if dirty else "")


def server_command(
    impl: str, port: int, root: Path = ROOT, python: str = sys.executable
) -> tuple[list[str], dict, Path]:
    """argv, extra environment and working directory of one implementation (ours from `root` on `python`)."""
    pin = ["taskset", "-c", SERVER_CORE]
    if impl in ("ours", "ours-2w", "ours-cb", "ours-cb-obs"):
        argv = [
            python,
            str(root / "userprofile_service.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ]
        if impl == "ours-2w":
            return [*argv, "--workers", "2"], {}, root
        if impl == "ours-cb-obs":  # what the SDK's tracer and meter cost, beside ours as it ships
            return pin + argv, {"COUCHBASE_SDK_OBSERVABILITY": "true"}, root
        return pin + argv, {}, root
    if impl in ("fastapi", "fastapi-cb"):
        app = "fastapi_app:app" if impl == "fastapi" else "fastapi_cb_app:app"
        uvicorn = ["-m", "uvicorn", app, "--app-dir", str(BENCH), "--host", "127.0.0.1", "--port", str(port)]
        fast = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
        return [*pin, sys.executable, *uvicorn, *fast], {}, ROOT
    node = {"PORT": str(port), "HOST": "127.0.0.1", "NODE_ENV": "production"}
    if impl == "express":
        return [*pin, "node", "app.js"], node, BENCH / "express"
    if impl == "express-cb":
        return [*pin, "node", "app_cb.js"], node, BENCH / "express"
    if impl == "node-cb":
        return [*pin, "node", "server.js"], node, BENCH / "node_bare"
    raise ValueError(impl)


class Server:
    def __init__(self, impl: str, env: dict, log_dir: Path, root: Path = ROOT, python: str = sys.executable):
        self.impl = impl
        self.port = free_port()
        argv, extra, cwd = server_command(impl, self.port, root, python)
        self.sha = service_sha(root) if impl.startswith("ours") else None  # the lead may edit it between runs
        self.log = open(log_dir / f"{impl}.log", "wb")  # noqa: SIM115  # the server's, open while it runs
        # Its own session, so stop() ends exactly this server and the processes it started.
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, **extra, **env},
            cwd=cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, token: str, timeout: float = 60) -> None:
        """Until /healthz answers, then until an authorized lookup does (store and token loaded)."""
        deadline = time.monotonic() + timeout
        for path, headers in (("/healthz", {}), ("/api/v1/id/1", {"Authorization": f"Bearer {token}"})):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.impl} exited with {self.proc.returncode}; see {self.log.name}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.impl}: no 200 on {path} in {timeout}s; see {self.log.name}")
                request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers)
                try:
                    with urllib.request.urlopen(request, timeout=2) as r:  # nosec B310  # the URL is http://127.0.0.1 built here, never input
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(0.2)

    def cpu_seconds(self) -> float:
        """CPU time used so far by every live process of the server's process group."""
        total = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.proc.pid:  # pgrp
                total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / CLK_TCK

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
        self.log.close()


# -- one measured run ------------------------------------------------------------
def listen_overflows() -> int:
    """The kernel's TcpExtListenOverflows counter (absolute, without touching nstat's history)."""
    try:
        out = subprocess.run(
            ["nstat", "-asz", "TcpExtListenOverflows"], capture_output=True, text=True, check=True
        ).stdout
        for line in out.splitlines():
            if line.startswith("TcpExtListenOverflows"):
                return int(line.split()[1])
    except (OSError, subprocess.CalledProcessError):
        pass
    with open("/proc/net/netstat") as f:  # nstat reads the same file
        lines = f.read().splitlines()
    names, values = lines[0].split(), lines[1].split()
    return int(values[names.index("ListenOverflows")])


def busy_cpu() -> float:
    """CPU seconds all cores spent running processes (user, nice, system) or stolen by the hypervisor."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + steal) / CLK_TCK


def wait_quiet(max_wait: float, limit: float = 0.15) -> None:
    """Wait up to max_wait seconds for a second in which the cores are busy less than `limit` in all."""
    deadline = time.monotonic() + max_wait
    while max_wait > 0:
        before = busy_cpu()
        time.sleep(1)
        load = busy_cpu() - before
        if load < limit:
            return
        if time.monotonic() > deadline:
            print(f"  the machine is still busy ({load:.0%} of a core in use by others); measuring anyway")
            return


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int | None) -> float:
    """CPU seconds used so far by one process (all its threads), 0 without one."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wrk(
    server: Server,
    conns: int,
    duration: float,
    token: str,
    count: int | str,
    store_pid: int | None,
    timeout: float = 2,
    script: str | None = None,
) -> dict:
    """One wrk run with a script (``random_id.lua`` unless another is named): random ids of
    1..count, or the paths of the file ``@FILE``; an answer slower than ``timeout`` seconds
    counts as an error (wrk's default: 2)."""
    argv = [
        "taskset",
        "-c",
        WRK_CORE,
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{duration:g}s",
        "--latency",
        f"--timeout={timeout:g}s",
        "-s",
        script or str(BENCH / "random_id.lua"),
        f"http://127.0.0.1:{server.port}",
        "--",
        token,
        str(count),
    ]
    overflows, server_cpu, wrk_cpu = listen_overflows(), server.cpu_seconds(), children_cpu()
    busy, store_cpu = busy_cpu(), process_cpu(store_pid)
    start = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    wall = time.monotonic() - start
    # wrk is the only child reaped in between, so the children's CPU delta is wrk's own.
    wrk_cpu = (children_cpu() - wrk_cpu) / wall
    server_cpu = (server.cpu_seconds() - server_cpu) / wall
    store_cpu = (process_cpu(store_pid) - store_cpu) / wall
    other_cpu = max(0.0, (busy_cpu() - busy) / wall - wrk_cpu - server_cpu - store_cpu)
    overflows = listen_overflows() - overflows
    lines = [line for line in out.stdout.splitlines() if line.startswith("JSON ")]
    if out.returncode or not lines:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    raw = json.loads(lines[-1][5:])
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {
        "impl": server.impl,
        "service_sha256": server.sha,
        "conns": conns,
        "duration_s": raw["duration_us"] / 1e6,
        "requests": raw["requests"],
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000,
        "socket_errors": {k: raw[k] for k in ("connect", "read", "write", "timeout")},
        "errors": socket_errors + raw["status"],
        "non_2xx": raw["status"],
        "listen_overflows": overflows,
        "wrk_cpu": round(wrk_cpu, 3),
        "server_cpu": round(server_cpu, 3),
        "store_cpu": round(store_cpu, 3),
        "other_cpu": round(other_cpu, 3),
        "noisy": other_cpu > NOISY,
        "server_us_per_request": round(server_cpu * wall / max(raw["requests"], 1) * 1e6, 1),
        "store_us_per_request": round(store_cpu * wall / max(raw["requests"], 1) * 1e6, 1),
        "generator_bound": wrk_cpu >= GENERATOR_BOUND,
        "wrk_output": out.stdout,
    }


def bench_impl(impl: str, args, env: dict, token: str, log_dir: Path, store_pid: int | None) -> list[dict]:
    """Start one implementation, warm it up, measure it at each connection count, stop it."""
    server = Server(impl, env, log_dir, python=args.python)
    runs = []
    try:
        server.wait_ready(token)
        if args.warmup > 0:
            wrk(server, 32, args.warmup, token, args.count, store_pid)
        for conns in args.conns_list:
            tries = []
            for _ in range(args.repeat):
                wait_quiet(args.settle)
                tries.append(wrk(server, conns, args.duration, token, args.count, store_pid))
                if server.proc.poll() is not None:
                    raise RuntimeError(f"{impl} died during the run at c={conns}; see {server.log.name}")
                time.sleep(1)  # let the closed connections drain
            tries.sort(key=lambda r: r["rps"])
            # The median of the tries the rest of the machine left alone, when there are any.
            quiet = [r for r in tries if not r["noisy"]] or tries
            run = quiet[len(quiet) // 2]
            run["rps_all"] = [round(r["rps"]) for r in tries]
            run["us_per_request_all"] = [r["server_us_per_request"] for r in tries]
            print(
                f"  {impl:10} c={conns:<4} {run['rps']:9,.0f} req/s  p50 {run['p50_ms']:7.2f} ms"
                f"  p99 {run['p99_ms']:8.2f} ms  errors {run['errors']}"
                f"  overflows {run['listen_overflows']}"
                f"  wrk cpu {run['wrk_cpu']:.0%}  server cpu {run['server_cpu']:.0%}"
                f"  other cpu {run['other_cpu']:.0%}  {run['server_us_per_request']:.0f} us/req",
                flush=True,
            )
            runs.append(run)
    finally:
        server.stop()
    return runs


def start_caves(args, envs: dict):
    """A CAVES cluster on core 1 (beside wrk), loaded by loaddata.py like the embedded store."""
    from testkit.caves import Caves

    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(WRK_CORE)})  # gocaves inherits it
    try:
        # No log: CAVES logs every packet, gigabytes over a full run.
        caves = Caves().start()
    finally:
        os.sched_setaffinity(0, cores)
    for impl in COUCHBASE_IMPLS:
        envs[impl] = caves.env()
    print(f"loading {args.count} profiles into CAVES", flush=True)
    return caves.loaded("--count", str(args.count), "--seed", "1", "--token", args.token)
