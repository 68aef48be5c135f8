"""Ours against ours at an earlier commit, in one run (make bench-ab).

A change to the request path must not make the service slower, and on this
shared, noisy machine only a comparison made in one run can show it. This
serves the same SQLite store from the working tree and from an earlier commit
(HEAD~1 unless --against names another), each in turn on core 0, with wrk on
core 1 asking for random ids. The two alternate round by round, which one goes
first swapped each round, and each round starts both servers afresh, so that
whatever else the machine does falls on both alike.

It prints every round, then each side's median req/s, server CPU per request
and p99, and in how many rounds the working tree served more requests.

With --couchbase both serve one CAVES cluster instead (its bucket keeping a
replica, as a production bucket does), loaded by loaddata.py; each run also
reports the replica reads the service counted (/metrics), which a healthy
cluster should not need.

    .venv/bin/python bench/ab.py                           # HEAD~1, 32 connections, 8 rounds
    .venv/bin/python bench/ab.py --against 6946c67 --rounds 12 --conns 128
    .venv/bin/python bench/ab.py --couchbase --against main --conns 32
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

from run import BENCH, ROOT, WRK_CORE, Server, git_commit, seed, store_arguments, wait_quiet, wrk

SIDES = ("before", "after")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--against", default="HEAD~1", help="the commit to compare with (default HEAD~1)")
    p.add_argument("--rounds", type=int, default=8, help="rounds, each measuring both sides (default 8)")
    p.add_argument("--conns", type=int, default=32, help="connections (default 32)")
    p.add_argument("--duration", type=float, default=6, help="seconds measured per side and round (default 6)")
    p.add_argument("--warmup", type=float, default=2, help="seconds of discarded load first (default 2)")
    p.add_argument("--settle", type=float, default=10,
                   help="wait up to this many seconds before each run for an idle machine (default 10)")
    p.add_argument("--couchbase", action="store_true",
                   help="serve a CAVES cluster (.tools/bin/gocaves) instead of the embedded store")
    store_arguments(p)
    return p.parse_args(argv)


def replica_reads(server: Server) -> int | None:
    """The service's count of replica reads, or None where it counts none."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:  # nosec B310  # http://127.0.0.1, built here
            found = re.search(rb"^userprofile_store_replica_reads_total (\d+)$", r.read(), re.M)
    except OSError:
        return None
    return int(found.group(1)) if found else None


def start_caves(args) -> tuple:
    """A CAVES cluster on wrk's core, its bucket keeping one replica, loaded as run.py loads its own."""
    sys.path.insert(0, str(ROOT / "tests"))
    from caves import Caves  # the test suite's driver of gocaves

    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(WRK_CORE)})  # gocaves inherits it
    try:
        caves = Caves().start()
    finally:
        os.sched_setaffinity(0, cores)
    caves.add_bucket("sample_app", replicas=1)
    env = {"COUCHBASE_HOST": caves.connstr}
    subprocess.run([sys.executable, str(ROOT / "loaddata.py"), "--count", str(args.count), "--seed", "1",
                    "--token", args.token], env={**os.environ, **env}, cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return caves, env


def checkout(ref: str, into: Path) -> str:
    """The service's files at `ref`, written into `into`; returns the commit's short hash."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "--verify", f"{ref}^{{commit}}"],
                            capture_output=True, text=True, check=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return commit


def measure(root: Path, args, token: str, log_dir: Path, env: dict) -> dict:
    log_dir.mkdir(parents=True, exist_ok=True)
    server = Server("ours-cb" if args.couchbase else "ours", env, log_dir, root)
    try:
        server.wait_ready(token)
        wrk(server, args.conns, args.warmup, token, args.count, None)
        wait_quiet(args.settle)
        reads = replica_reads(server)
        run = wrk(server, args.conns, args.duration, token, args.count, None)
        after = replica_reads(server)
        run["replica_reads"] = after - reads if reads is not None and after is not None else None
        return run
    finally:
        server.stop()


def main(argv=None) -> int:
    args = parse_args(argv)
    caves = None
    if args.couchbase:
        caves, env = start_caves(args)
        token = args.token
    else:
        env, token = {"USERPROFILE_DB": args.db}, seed(args.db, args.count, args.token)
    raw = BENCH / "results" / "raw"
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        labels = {"before": checkout(args.against, Path(tmp)), "after": git_commit()}
        roots = {"before": Path(tmp), "after": ROOT}
        print(f"before: {labels['before']} ({args.against}); after: the working tree, {labels['after']}")
        print(f"{args.rounds} rounds of {args.duration:g} s at {args.conns} connections", flush=True)
        runs: dict[str, list[dict]] = {side: [] for side in SIDES}
        for n in range(args.rounds):
            for side in SIDES if n % 2 == 0 else SIDES[::-1]:
                run = measure(roots[side], args, token, raw / "ab" / side, env)
                runs[side].append(run)
                reads = "" if run["replica_reads"] is None else f"  replica reads {run['replica_reads']}"
                print(f"  round {n + 1} {side:6} {run['rps']:9,.0f} req/s {run['server_us_per_request']:6.1f} us/req"
                      f"  p99 {run['p99_ms']:6.2f} ms  errors {run['errors']}{reads}"
                      f"{'  (noisy machine)' if run['noisy'] else ''}", flush=True)
    if caves is not None:
        caves.stop()
    median = {side: {key: statistics.median(r[key] for r in runs[side])
                     for key in ("rps", "server_us_per_request", "p99_ms")} for side in SIDES}
    won = sum(a["rps"] > b["rps"] for a, b in zip(runs["after"], runs["before"], strict=True))
    print()
    for side in SIDES:
        m = median[side]
        print(f"{side:6} median {m['rps']:9,.0f} req/s {m['server_us_per_request']:6.1f} us/req"
              f"  p99 {m['p99_ms']:6.2f} ms  ({labels[side]})")
    after, before = median["after"], median["before"]
    print(f"after / before: req/s {after['rps'] / before['rps']:.3f}x,"
          f" CPU per request {after['server_us_per_request'] / before['server_us_per_request']:.3f}x;"
          f" after served more in {won} of {args.rounds} rounds")
    errors = sum(r["errors"] for side in SIDES for r in runs[side])
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for side in SIDES:
        for r in runs[side]:
            del r["wrk_output"]
    out = raw / f"ab-{stamp}.json"
    out.write_text(json.dumps({"labels": labels, "args": vars(args), "median": median, "runs": runs}, indent=1) + "\n")
    print(f"numbers kept in {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
