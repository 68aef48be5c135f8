"""Ours against ours at an earlier commit, in one run (make bench-ab).

A change to the request path must not make the service slower, and on this
shared, noisy machine only a comparison made in one run can show it. This
serves the same SQLite store from the working tree and from an earlier commit
(HEAD~1 unless --against names another), each in turn on core 0, with wrk on
core 1 asking for random ids. The two alternate round by round, which one goes
first swapped each round, and each round starts both servers afresh, so that
whatever else the machine does falls on both alike.

It prints every round, then each side's median req/s, server CPU per request
and p99, in how many rounds the working tree served more requests, and the
median and range of the rounds' own after/before ratios (the two sides of a
round ran back to back, so the ratio cancels load that drifts between rounds).

Each side may run on its own interpreter (--against-python, --python), so the
same code on two Pythons is an A/B too; --couchbase serves one CAVES cluster
instead of the SQLite store. --after-env sets a variable for the working tree's side
alone, and --otlp-collector starts an OpenTelemetry Collector (on wrk's core) that the
working tree's side exports its traces to: the same tree with and without export.

    .venv/bin/python bench/ab.py                           # HEAD~1, 32 connections, 8 rounds
    .venv/bin/python bench/ab.py --against 6946c67 --rounds 12 --conns 128
    .venv/bin/python bench/ab.py --against HEAD --python .venv-3.13/bin/python   # 3.11 vs 3.13
    .venv/bin/python bench/ab.py --paths nicknames.txt     # other requests: a file of paths
    .venv/bin/python bench/ab.py --against HEAD --otlp-collector --after-env OTEL_TRACES_SAMPLER_ARG=0.01
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from measure import (
    BENCH,
    WRK_CORE,
    Server,
    git_commit,
    python_argument,
    python_version,
    seed,
    start_caves,
    store_arguments,
    wait_quiet,
    wrk,
)

from testkit import ROOT

SIDES = ("before", "after")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--against", default="HEAD~1", help="the commit to compare with (default HEAD~1)")
    p.add_argument("--rounds", type=int, default=8, help="rounds, each measuring both sides (default 8)")
    p.add_argument("--conns", type=int, default=32, help="connections (default 32)")
    p.add_argument("--duration", type=float, default=6, help="seconds measured per side and round (default 6)")
    p.add_argument("--warmup", type=float, default=2, help="seconds of discarded load first (default 2)")
    p.add_argument(
        "--settle",
        type=float,
        default=10,
        help="wait up to this many seconds before each run for an idle machine (default 10)",
    )
    store_arguments(p)
    python_argument(p)
    p.add_argument(
        "--against-python", default=sys.executable, help="the Python the earlier commit runs on (default: this one)"
    )
    p.add_argument(
        "--couchbase",
        action="store_true",
        help="serve from one CAVES cluster instead of the SQLite store (needs .tools/bin/gocaves)",
    )
    p.add_argument("--paths", help="a file of paths to ask, one a line, instead of random ids (random_id.lua)")
    p.add_argument(
        "--after-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the working tree's side only (repeatable)",
    )
    p.add_argument(
        "--otlp-collector",
        action="store_true",
        help="the working tree's side exports its traces to an OpenTelemetry Collector (tools/install_otelcol.sh)",
    )
    return p.parse_args(argv)


def start_collector(work: Path):
    """An OpenTelemetry Collector on wrk's core (it inherits this process's affinity), its spans
    received and dropped (os.devnull)."""
    from testkit.otelcol import Collector

    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(WRK_CORE)})
    try:
        return Collector(work, output=Path(os.devnull)).start()
    finally:
        os.sched_setaffinity(0, cores)


def checkout(ref: str, into: Path) -> str:
    """The service's files at `ref`, written into `into`; returns the commit's short hash."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return commit


def replica_reads(server: Server) -> int | None:
    """The service's count of replica reads, or None where it counts none."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:  # nosec B310  # http://127.0.0.1, built here
            found = re.search(rb"^userprofile_store_replica_reads_total (\d+)$", r.read(), re.M)
    except OSError:
        return None
    return int(found.group(1)) if found else None


def measure(root: Path, python: str, env: dict, args, token: str, log_dir: Path, store_pid: int | None) -> dict:
    log_dir.mkdir(parents=True, exist_ok=True)
    server = Server("ours-cb" if args.couchbase else "ours", env, log_dir, root, python)
    target = f"@{Path(args.paths).resolve()}" if args.paths else args.count
    try:
        server.wait_ready(token)
        wrk(server, args.conns, args.warmup, token, target, store_pid)
        wait_quiet(args.settle)
        reads = replica_reads(server)
        run = wrk(server, args.conns, args.duration, token, target, store_pid)
        after = replica_reads(server)
        run["replica_reads"] = after - reads if reads is not None and after is not None else None
        return run
    finally:
        server.stop()


def main(argv=None) -> int:
    args = parse_args(argv)
    raw = BENCH / "results" / "raw"
    caves, env, store_pid = None, {"USERPROFILE_DB": args.db}, None
    if args.couchbase:
        envs: dict[str, dict] = {}
        caves = start_caves(args, envs)
        env, store_pid, token = envs["ours-cb"], caves.proc.pid, args.token
    else:
        token = seed(args.db, args.count, args.token)
    pythons = {"before": args.against_python, "after": args.python}
    envs = {"before": env, "after": {**env, **dict(pair.split("=", 1) for pair in args.after_env)}}
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        collector = start_collector(Path(tmp)) if args.otlp_collector else None
        if collector is not None:
            envs["after"]["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.endpoint
        if args.after_env or collector is not None:
            print(f"after's own environment: {' '.join(f'{k}={v}' for k, v in envs['after'].items() if k not in env)}")
        labels = {"before": checkout(args.against, Path(tmp)), "after": git_commit()}
        for side in SIDES:
            labels[side] += f" on Python {python_version(pythons[side])}"
        roots = {"before": Path(tmp), "after": ROOT}
        print(f"before: {labels['before']} ({args.against}); after: the working tree, {labels['after']}")
        print(
            f"{args.rounds} rounds of {args.duration:g} s at {args.conns} connections"
            f" on {'CAVES' if args.couchbase else 'the SQLite store'}",
            flush=True,
        )
        runs: dict[str, list[dict]] = {side: [] for side in SIDES}
        try:
            for n in range(args.rounds):
                for side in SIDES if n % 2 == 0 else SIDES[::-1]:
                    run = measure(roots[side], pythons[side], envs[side], args, token, raw / "ab" / side, store_pid)
                    runs[side].append(run)
                    reads = "" if run["replica_reads"] is None else f"  replica reads {run['replica_reads']}"
                    print(
                        f"  round {n + 1} {side:6} {run['rps']:9,.0f} req/s"
                        f" {run['server_us_per_request']:6.1f} us/req  p99 {run['p99_ms']:6.2f} ms"
                        f"  errors {run['errors']}{reads}{'  (noisy machine)' if run['noisy'] else ''}",
                        flush=True,
                    )
        finally:
            if caves:
                caves.stop()
            if collector is not None:
                collector.stop()
    median = {
        side: {key: statistics.median(r[key] for r in runs[side]) for key in ("rps", "server_us_per_request", "p99_ms")}
        for side in SIDES
    }
    pairs = list(zip(runs["after"], runs["before"], strict=True))
    won = sum(a["rps"] > b["rps"] for a, b in pairs)
    paired = {key: sorted(a[key] / b[key] for a, b in pairs) for key in ("rps", "server_us_per_request")}
    print()
    for side in SIDES:
        m = median[side]
        print(
            f"{side:6} median {m['rps']:9,.0f} req/s {m['server_us_per_request']:6.1f} us/req"
            f"  p99 {m['p99_ms']:6.2f} ms  ({labels[side]})"
        )
    after, before = median["after"], median["before"]
    print(
        f"after / before: req/s {after['rps'] / before['rps']:.3f}x,"
        f" CPU per request {after['server_us_per_request'] / before['server_us_per_request']:.3f}x;"
        f" after served more in {won} of {args.rounds} rounds"
    )
    spread = {key: f"{statistics.median(r):.3f}x ({r[0]:.2f}-{r[-1]:.2f})" for key, r in paired.items()}
    print(f"per round, after / before: req/s {spread['rps']}, CPU per request {spread['server_us_per_request']}")
    errors = sum(r["errors"] for side in SIDES for r in runs[side])
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for side in SIDES:
        for r in runs[side]:
            del r["wrk_output"]
    out = raw / f"ab-{stamp}.json"
    result = {"labels": labels, "args": vars(args), "median": median, "paired": paired, "runs": runs}
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"numbers kept in {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
