"""The three-way benchmarks (make bench): our service, FastAPI and Express on one core each.

Each implementation serves the same embedded SQLite store (10,000 profiles),
pinned to core 0 with taskset; wrk, pinned to core 1, asks for random ids
with the bearer token at 1, 8, 32, 128 and 512 connections. Our service is
also run with --workers 2, unpinned, to show how it scales onto both cores.

With --couchbase the same, at 1, 8, 32 and 128 connections, against one CAVES
cluster (Couchbase's emulator, on core 1 beside wrk) loaded by loaddata.py:
ours as it ships, FastAPI + acouchbase, Express 5 + the `couchbase` npm
package, and a framework-free node:http server on that package (the ceiling
of that SDK). The peers run with the SDK's tracing and metrics off. The figure
that separates them is the server's CPU time per request: CAVES saturates its
core at about 11,000 gets/s, which caps everyone's throughput.

For every run it records wrk's requests/s, p50/p99 latency, socket errors and
non-2xx answers, the kernel's listen-queue overflows (nstat) during the run,
and the CPU that wrk and the server used: wrk at ~100% of its core means the
load generator, not the server, was the limit.

    .venv/bin/python bench/run.py                      # full run: writes bench/results/
    .venv/bin/python bench/run.py --quick              # smoke: 2 s runs at 1 and 32 connections
    .venv/bin/python bench/run.py --only ours --conns 32 --duration 5
    .venv/bin/python bench/run.py --couchbase          # the Couchbase three-way and the ceiling, on CAVES
    .venv/bin/python bench/run.py --couchbase --only ours-cb,node-cb --conns 32 --duration 5

Before each run it waits (up to --settle seconds) for the shared machine to go
idle, and it flags runs during which other processes still used the CPU.
A run of a subset (--only, --conns, --quick) prints its table and keeps its
numbers in bench/results/raw/, leaving the committed results alone.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from importlib import metadata
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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10, help="seconds per run (default 10)")
    p.add_argument("--warmup", type=float, default=3, help="seconds of discarded load first (default 3)")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each point this many times and keep the median by req/s, of the tries"
        " not flagged as noisy when there are any (default 1)",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 2 s runs at 1 and 32 connections")
    p.add_argument("--only", help=f"comma-separated subset of {','.join(IMPLS)}")
    p.add_argument("--conns", help="comma-separated connection counts (default 1,8,32,128,512)")
    store_arguments(p)
    python_argument(p)
    p.add_argument("--out", default=str(BENCH / "results"), help="results folder")
    p.add_argument(
        "--settle",
        type=float,
        default=30,
        help="wait up to this many seconds before each run for an idle machine (default 30)",
    )
    p.add_argument(
        "--couchbase",
        action="store_true",
        help="the implementations on a CAVES cluster instead (needs .tools/bin/gocaves)",
    )
    args = p.parse_args(argv)
    default_impls = list(COUCHBASE_IMPLS) if args.couchbase else [i for i in IMPLS if i not in COUCHBASE_IMPLS]
    args.impls = args.only.split(",") if args.only else default_impls
    unknown = set(args.impls) - set(IMPLS)
    if unknown:
        p.error(f"unknown implementation(s): {', '.join(sorted(unknown))}")
    if args.quick:
        args.duration, args.warmup, args.settle = 2, 1, 0
    default_conns = "1,32" if args.quick else ",".join(map(str, COUCHBASE_CONNS if args.couchbase else CONNS))
    args.conns_list = [int(c) for c in (args.conns or default_conns).split(",")]
    args.full = not (args.only or args.conns or args.quick)
    return args


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


# -- the report ------------------------------------------------------------------
def command_output(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip()
    except OSError:
        return "missing"


def npm_version(name: str, app: str = "express") -> str:
    try:
        return json.loads((BENCH / app / "node_modules" / name / "package.json").read_text())["version"]
    except OSError:
        return "missing"


def machine_info() -> dict:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in command_output(["lscpu"]).splitlines()
            if line.startswith("Model name")
        ),
        platform.processor(),
    )
    versions = {
        "python": platform.python_version(),
        "node": command_output(["node", "--version"]),
        "wrk": command_output(["wrk", "-v"]).split(" Copyright")[0],
        "express": npm_version("express"),
        "better-sqlite3": npm_version("better-sqlite3"),
        "couchbase-node": npm_version("couchbase"),
        "couchbase-node-bare": npm_version("couchbase", "node_bare"),
    }
    for pkg in ("fastapi", "uvicorn", "pydantic", "starlette", "uvloop", "httptools", "couchbase"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "missing"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }


def ratio(runs: list[dict], a: str, b: str, conns: int = 32, key: str = "rps") -> float | None:
    by = {(r["impl"], r["conns"]): r for r in runs}
    if (a, conns) in by and (b, conns) in by and by[(b, conns)][key]:
        return by[(a, conns)][key] / by[(b, conns)][key]
    return None


def name(impl: str) -> str:
    return IMPLS[impl].split(" (")[0]


SHORT = {"express-cb": "Express", "fastapi-cb": "FastAPI", "node-cb": "bare node:http"}


def couchbase_aims(runs: list[dict]) -> list[str]:
    """The aims on Couchbase, each with what this run measured and whether it was met."""
    by = {(r["impl"], r["conns"]): r for r in runs}
    ours = by.get(("ours-cb", 32))
    if ours is None:
        return []
    lines = [
        "**The aims, at 32 connections.** Server CPU per request is the figure compared, not"
        " throughput: CAVES answers about 11,000 gets/s at most, which caps everyone (it used"
        f" up to {max(r['store_cpu'] for r in runs):.0%} of its core in this run).",
        "",
        "| aim (server CPU per request, ours / peer) | measured | met |",
        "| --- | --- | :---: |",
    ]
    for peer, limit in TARGETS.items():
        x = ratio(runs, "ours-cb", peer, key="server_us_per_request")
        if x is not None:
            lines.append(
                f"| ours ≤ {limit:.2f}× {SHORT[peer]} | {x:.2f}×"
                f" ({ours['server_us_per_request']:.0f} vs {by[(peer, 32)]['server_us_per_request']:.0f}"
                f" µs) | {'yes' if x <= limit else 'no'} |"
            )
    errors = sum(r["errors"] for r in runs if r["impl"] == "ours-cb")
    lines.append(f"| ours: 0 errors at every connection count | {errors} | {'yes' if errors == 0 else 'no'} |")
    express = by.get(("express-cb", 32))
    if express:
        lines.append(
            f"| ours' p99 ≤ Express's | {ours['p99_ms']:.2f} vs"
            f" {express['p99_ms']:.2f} ms | {'yes' if ours['p99_ms'] <= express['p99_ms'] else 'no'} |"
        )
    return [*lines, ""]


def markdown(result: dict) -> str:
    meta, runs = result["meta"], result["runs"]
    m, v = meta["machine"], meta["machine"]["versions"]
    repeat = (
        f" (the median by req/s of {meta['repeat']} runs, of those not marked † when there are any;"
        " their range in brackets)"
        if meta.get("repeat", 1) > 1
        else ""
    )
    couchbase = any(r["impl"] in COUCHBASE_IMPLS for r in runs)
    prefix = "couchbase-" if couchbase else ""
    versions = (
        f"Python {v['python']}, FastAPI {v['fastapi']}, uvicorn {v['uvicorn']}"
        f" (uvloop {v['uvloop']}, httptools {v['httptools']}), pydantic {v['pydantic']};"
        f" Node.js {v['node']}, Express {v['express']}"
    )
    if couchbase:
        versions += (
            f"; Couchbase SDKs: Python `couchbase` {v['couchbase']} (ours and acouchbase),"
            f" Node.js `couchbase` {v['couchbase-node']}; CAVES {meta.get('caves', '?')}; {v['wrk']}."
        )
    else:
        versions += f", better-sqlite3 {v['better-sqlite3']}; {v['wrk']}."
    lines = [
        "# Benchmark on Couchbase (CAVES): ours vs FastAPI + acouchbase vs Express + couchbase"
        if couchbase
        else "# Benchmark: our service vs FastAPI vs Express",
        "",
        f"Run {meta['date']} with `{meta['command']}`: {meta['duration_s']:g} s per run{repeat} after "
        f"{meta['warmup_s']:g} s of warm-up, GET /api/v1/id/<random 1..{meta['count']}>"
        " with the bearer token.",
        f"Our service: {'commit ' + meta['commit'] + ', ' if meta.get('commit') else ''}"
        f"code sha256 {meta['service_sha256']}…, on Python {meta.get('ours_python', v['python'])}."
        f" Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}"
        f" (load average before the run: {', '.join(map(str, m['loadavg_before']))}).",
        f"Versions: {versions}",
        "",
        "Servers pinned to core 0 (`taskset -c 0`), wrk `-t1` to core 1"
        + (
            ". `ours --workers 2` runs unpinned, so its processes share core 1 with wrk."
            if any(r["impl"] == "ours-2w" for r in runs)
            else "."
        ),
    ]
    if couchbase:
        lines += [
            "",
            "One CAVES cluster (Couchbase's SDK test emulator) on core 1 beside wrk, loaded by `loaddata.py`,"
            " serves every implementation. Ours runs as it ships (`cbconn.py`'s defaults, no connection-string"
            " options); the peers in their strongest form, with the SDK's threshold-logging tracer and logging"
            " meter off (`enable_tracing=False, enable_metrics=False` in Python, `tracingConfig`/`metricsConfig`"
            " in Node.js). FastAPI + acouchbase (`bench/fastapi_cb_app.py`) validates each document with its"
            " pydantic response model; Express (`bench/express/app_cb.js`) answers with `res.json`; the bare"
            " node:http server (`bench/node_bare/server.js`) passes the stored bytes through"
            " (`RawJsonTranscoder`): what any server on the Node.js SDK costs without a framework.",
        ]
    lines += [
        "",
        "| implementation | connections | req/s | p50 ms | p99 ms | errors | listen overflows"
        " | wrk CPU | server CPU | server CPU µs/request |"
        + (" CAVES CPU | CAVES µs/request |" if couchbase else "")
        + " others' CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        + (" ---: | ---: |" if couchbase else "")
        + " ---: |",
    ]
    for r in runs:
        flag = (" *" if r["generator_bound"] else "") + (" †" if r["noisy"] else "")
        if len(r.get("rps_all", [])) > 1:
            flag += f" ({min(r['rps_all']):,}–{max(r['rps_all']):,})"
        store = (
            f" {r['store_cpu']:.0%} | {r['store_us_per_request']:.0f} |"
            if couchbase and r["impl"] in COUCHBASE_IMPLS
            else " | |"
            if couchbase
            else ""
        )
        lines.append(
            f"| {IMPLS[r['impl']]} | {r['conns']} | {r['rps']:,.0f}{flag} | {r['p50_ms']:.2f} |"
            f" {r['p99_ms']:.2f} | {r['errors']} | {r['listen_overflows']} | {r['wrk_cpu']:.0%} |"
            f" {r['server_cpu']:.0%} | {r['server_us_per_request']:.0f} |{store}"
            f" {r['other_cpu']:.0%} |"
        )
    lines.append("")
    parts = []
    for other in ("fastapi", "express"):
        x = ratio(runs, "ours", other)
        if x is not None:
            parts.append(f"{x:.2f}× {name(other)}")
    if parts:
        lines += [f"**At 32 connections, ours serves {' and '.join(parts)} requests per second.**", ""]
    lines += couchbase_aims(runs)
    by = {(r["impl"], r["conns"]): r for r in runs}
    x = ratio(runs, "ours-cb-obs", "ours-cb", key="server_us_per_request")
    if x is not None:
        on, off = by[("ours-cb-obs", 32)], by[("ours-cb", 32)]
        more = on["server_us_per_request"] - off["server_us_per_request"]
        lines += [
            f"Ours with the SDK's tracing and metrics on (`COUCHBASE_SDK_OBSERVABILITY=true`) used"
            f" {abs(more):.0f} µs {'more' if more >= 0 else 'less'} CPU per request"
            f" than ours as it ships, at 32 connections ({on['server_us_per_request']:.0f} vs"
            f" {off['server_us_per_request']:.0f} µs, {x:.2f}×).",
            "",
        ]
    if ("ours", 32) in by and ("ours-cb", 32) in by:
        db, cb = by[("ours", 32)], by[("ours-cb", 32)]
        extra = cb["server_us_per_request"] - db["server_us_per_request"]
        lines += [
            f"At 32 connections, ours on CAVES serves {cb['rps']:,.0f} req/s against {db['rps']:,.0f}"
            f" on the embedded store: the SDK path costs {extra:.0f} µs more of the server's CPU per"
            " request.",
            "",
        ]
    x = ratio(runs, "ours-2w", "ours")
    if x is not None:
        lines += [f"1 → 2 workers at 32 connections: {x:.2f}× (the second worker shares a core with wrk).", ""]
    shas = {r["service_sha256"] for r in runs if r.get("service_sha256")}
    if len(shas) > 1:
        lines += [
            f"**Warning: our service's code changed during this run ({', '.join(sorted(shas))}):"
            " its rows do not all measure the same code.**",
            "",
        ]
    lines += [
        "Errors are wrk's socket errors (connect, read, write, timeout after 2 s) plus non-2xx answers."
        " Listen overflows are the kernel's `TcpExtListenOverflows` delta over the run (machine-wide)."
        " CPU is the share of one core used during the run; wrk and server CPU near 100% of their core"
        " are both expected at saturation."
        + (" CAVES CPU is the emulator's, per request the same way as the server's." if couchbase else "")
        + " Others' CPU is the machine's busy time not used by the server"
        + (", CAVES" if couchbase else "")
        + " or wrk: other processes on this shared machine, or time the hypervisor took (steal).",
    ]
    if any(r["noisy"] for r in runs):
        lines.append(
            f"`†`: others used more than {NOISY:.0%} of a core during that run: the machine was"
            " shared, so that figure is likely low."
        )
    if any(r["generator_bound"] for r in runs):
        lines.append(
            f"`*`: wrk used ≥{GENERATOR_BOUND:.0%} of its core: the load generator, not the server,"
            " was the limit, so that figure is a lower bound on what the server can do."
        )
    lines += ["", f"![requests per second]({prefix}throughput.png)", "", f"![latency]({prefix}latency.png)", ""]
    if couchbase:
        lines[-1:-1] = ["", f"![server CPU per request]({prefix}cpu.png)"]
    return "\n".join(lines)


def charts(runs: list[dict], out: Path, prefix: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def flagged(ax, rs, key, color, marker):
        """Hollow markers over the points measured on a busy machine or with wrk at its limit."""
        rs = [r for r in rs if r["noisy"] or r["generator_bound"]]
        ax.scatter(
            [r["conns"] for r in rs],
            [r[key] for r in rs],
            s=90,
            marker=marker,
            facecolors="white",
            edgecolors=color,
            zorder=3,
        )

    impls = [i for i in IMPLS if any(r["impl"] == i for r in runs)]
    note = "hollow markers: machine busy with other work, or wrk at its limit"
    fig, ax = plt.subplots(figsize=(8, 5))
    for n, impl in enumerate(impls):
        rs = [r for r in runs if r["impl"] == impl]
        ax.plot([r["conns"] for r in rs], [r["rps"] for r in rs], marker="o", color=f"C{n}", label=IMPLS[impl])
        flagged(ax, rs, "rps", f"C{n}", "o")
    ax.set(
        xscale="log",
        xlabel=f"connections ({note})",
        ylabel="requests per second",
        title="Throughput: GET /api/v1/id/<random id>, bearer token, wrk on core 1",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{prefix}throughput.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    for n, impl in enumerate(impls):
        rs = [r for r in runs if r["impl"] == impl]
        color = f"C{n}"
        ax.plot(
            [r["conns"] for r in rs], [r["p50_ms"] for r in rs], marker="o", color=color, label=f"{IMPLS[impl]} p50"
        )
        ax.plot(
            [r["conns"] for r in rs],
            [r["p99_ms"] for r in rs],
            marker="^",
            linestyle="--",
            color=color,
            label=f"{IMPLS[impl]} p99",
        )
        flagged(ax, rs, "p50_ms", color, "o")
        flagged(ax, rs, "p99_ms", color, "^")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel=f"connections ({note})",
        ylabel="latency (ms)",
        title="Latency p50 (solid) and p99 (dashed)",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / f"{prefix}latency.png", dpi=100)
    plt.close(fig)

    if not any(r["impl"] in COUCHBASE_IMPLS for r in runs):
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for n, impl in enumerate(impls):
        rs = [r for r in runs if r["impl"] == impl]
        ax.plot(
            [r["conns"] for r in rs],
            [r["server_us_per_request"] for r in rs],
            marker="o",
            color=f"C{n}",
            label=IMPLS[impl],
        )
        flagged(ax, rs, "server_us_per_request", f"C{n}", "o")
    ax.set(
        xscale="log",
        xlabel=f"connections ({note})",
        ylabel="server CPU µs per request (lower is better)",
        title="Server CPU per request on Couchbase (CAVES), one core",
    )
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{prefix}cpu.png", dpi=100)
    plt.close(fig)


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


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for tool, package in (("wrk", "wrk"), ("taskset", "util-linux")):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install -y {package}")
    on_couchbase = [impl for impl in args.impls if impl in COUCHBASE_IMPLS]
    if on_couchbase and not os.access(ROOT / ".tools" / "bin" / "gocaves", os.X_OK):
        sys.exit("--couchbase skipped: .tools/bin/gocaves is missing (bash tools/install_caves.sh builds it)")
    token = seed(args.db, args.count, args.token)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([".venv/bin/python bench/run.py", *(sys.argv[1:] if argv is None else argv)]),
        "service_sha256": service_sha(),
        "commit": git_commit(),
        "ours_python": python_version(args.python),
        "caves": command_output(["cat", str(ROOT / ".tools" / "bin" / "gocaves.version")]),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "repeat": args.repeat,
        "count": args.count,
        "conns": args.conns_list,
        "machine": machine_info(),
    }
    envs = {impl: {"USERPROFILE_DB": args.db} for impl in args.impls}
    caves = start_caves(args, envs) if on_couchbase else None
    runs = []
    try:
        for impl in args.impls:
            print(f"{IMPLS[impl]}:", flush=True)
            if impl in COUCHBASE_IMPLS:
                assert caves is not None  # started above for every impl on Couchbase
                runs += bench_impl(impl, args, envs[impl], args.token, raw, caves.proc.pid)
            else:
                runs += bench_impl(impl, args, envs[impl], token, raw, None)
    finally:
        if caves:
            caves.stop()
    result = {"meta": meta, "runs": runs}
    report = markdown(result)
    print("\n" + report)
    name = "couchbase" if args.couchbase else "results"
    if args.full:
        (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / f"{name}.md").write_text(report)
        prefix = "couchbase-" if args.couchbase else ""
        charts(runs, out, prefix)
        print(f"wrote {out}/{name}.md, {name}.json and the {prefix}*.png charts")
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        (raw / f"partial-{stamp}.json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"a partial run: numbers kept in {raw}/partial-{stamp}.json, committed results untouched")
    return 0


if __name__ == "__main__":
    sys.exit(main())
