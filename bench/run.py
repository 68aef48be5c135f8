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
import json
import os
import shutil
import sys
from pathlib import Path

from measure import (
    BENCH,
    CONNS,
    COUCHBASE_CONNS,
    COUCHBASE_IMPLS,
    IMPLS,
    bench_impl,
    command_output,
    git_commit,
    python_argument,
    python_version,
    seed,
    service_sha,
    start_caves,
    store_arguments,
)
from report import charts, machine_info, markdown

from testkit import ROOT


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
