"""Nickname and username lookups: ours against FastAPI and Express on Couchbase's own SQL++
engine, and pages against answering everything (the figures: docs/decisions/2026-12-06-paging.md).

Three measurements, each server pinned to core 0 and wrk to core 1, as bench/run.py does:

  peers   ours, FastAPI + acouchbase and Express + couchbase (bench/fastapi_cb_app.py,
          bench/express/app_cb.js) on one CAVES cluster with cbq-engine behind its query port
          (both on core 1), loaded by loaddata.py (--count, this loader's shape): each runs the
          same prepared statement (cbquery.py's, a first page of 100) and gets the documents.
          wrk asks for nicknames, then usernames, of the loaded profiles.
  paging  the blog generator's data (loaddata.py --shape blog, --count >= 100,000: ~260
          nicknames): GET /api/v1/nickname/<the nickname of a random profile> from the working
          tree (a first page of 100) and from an earlier commit (--against, default fa2d877:
          every match in one answer), on the embedded store and on CAVES with the engine.
  mix     the same data and sides: a mixed load, 70% ids, 10% nicknames, 10% usernames, 10%
          pictures, and its p99.

Each row: requests/s, p50/p99, mean answer size, the server's CPU per request (and the same
less what it spends idle, measured for 3 s just before), and on CAVES the emulator's and the
engine's CPU per request. The engine reads every profile of its file
datastore for each statement (no secondary indexes there): its CPU, not the servers', bounds
the throughput of a lookup on CAVES, so the servers' CPU per request is the figure that
compares them.

    .venv/bin/python bench/lookups.py peers --count 2000
    .venv/bin/python bench/lookups.py paging mix --count 100000 --images 500
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from ab import checkout
from measure import BENCH, WRK_CORE, Server, git_commit, process_cpu, seed, wait_quiet, wrk

import loaddata
from testkit import LAYOUT, ROOT, run_loaddata
from testkit.caves import Caves, QueryEngine

PEERS = ("ours-cb", "fastapi-cb", "express-cb")
IDLE_SECONDS = 3
MIX = {"id": 70, "nickname": 10, "username": 10, "picture/raw": 10}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="+", choices=("peers", "paging", "mix"))
    p.add_argument("--count", type=int, default=2000, help="profiles loaded (default 2000; paging and mix: 100000)")
    p.add_argument("--images", type=int, default=500, help="pictures of the blog's data (default 500)")
    p.add_argument("--conns", type=int, default=8, help="wrk's connections (default 8; mix: 32)")
    p.add_argument("--duration", type=float, default=10, help="seconds per run (default 10)")
    p.add_argument("--warmup", type=float, default=3, help="seconds of discarded load first (default 3)")
    p.add_argument("--settle", type=float, default=10, help="seconds to wait for a quiet machine (default 10)")
    p.add_argument("--against", default="fa2d877", help="the commit that answered everything (default fa2d877)")
    p.add_argument("--stores", default="embedded,caves", help="paging and mix: embedded, caves or both")
    p.add_argument("--token", default="bench-token")
    p.add_argument(
        "--timeout",
        type=float,
        default=5,
        help="seconds a lookup may take, for wrk and the services' COUCHBASE_QUERY_TIMEOUT (default 5)",
    )
    return p.parse_args(argv)


def paths(profiles: list[dict], route: str, field: str, n: int, rng: random.Random) -> list[str]:
    """n lookups of the values of random profiles (so a value is asked as often as it is held)."""
    return [f"/api/v1/{route}/{urllib.parse.quote(str(rng.choice(profiles)[field]), safe='')}" for _ in range(n)]


def paths_file(lines: list[str], into: Path) -> str:
    into.write_text("\n".join(lines) + "\n")
    return f"@{into}"


def start_cluster(count: int, shape: str, images: int, token: str, workdir: Path) -> Caves:
    """CAVES and its SQL++ engine on core 1 (beside wrk), loaded by loaddata.py."""
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(WRK_CORE)})  # both inherit it
    try:
        engine = QueryEngine(workdir / "datastore", [LAYOUT.profiles]).start()
        caves = Caves(engine=engine).start()  # no logs: CAVES logs every packet
    finally:
        os.sched_setaffinity(0, cores)
    print(f"loading {count} profiles ({shape}) into CAVES", flush=True)
    loader = ("--count", str(count), "--seed", "1", "--token", token, "--shape", shape, "--images", str(images))
    return caves.loaded(*loader)


def measure(server: Server, target: str, args, conns: int, caves: Caves | None) -> dict:
    """wrk on the paths of ``target`` (a @file); CAVES's and the engine's CPU per request beside it."""
    store_pid = caves.proc.pid if caves and caves.proc else None
    engine_pid = caves.engine.proc.pid if caves and caves.engine and caves.engine.proc else None
    # One lookup first, however long: the engine's datastore is written on the first statement.
    first = Path(target[1:]).read_text().splitlines()[0]
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{first}", headers={"Authorization": f"Bearer {args.token}"}
    )
    with urllib.request.urlopen(request, timeout=600):  # nosec B310  # http://127.0.0.1, built here
        pass
    wrk(server, conns, args.warmup, args.token, target, store_pid, args.timeout)
    wait_quiet(args.settle)
    # What the server spends without load (its SDK's threads, pings): at a few hundred lookups
    # a second, a large share of its CPU per request; the net figure leaves it out.
    idle = server.cpu_seconds()
    time.sleep(IDLE_SECONDS)
    idle_share = (server.cpu_seconds() - idle) / IDLE_SECONDS
    engine_cpu = process_cpu(engine_pid)
    run = wrk(server, conns, args.duration, args.token, target, store_pid, args.timeout)
    busy = max(0.0, run["server_cpu"] - idle_share) * run["duration_s"]
    run["server_net_us_per_request"] = round(busy / max(run["requests"], 1) * 1e6, 1)
    run["engine_us_per_request"] = round((process_cpu(engine_pid) - engine_cpu) / max(run["requests"], 1) * 1e6, 1)
    run["bytes_per_request"] = round(json.loads(run.pop("wrk_output").split("JSON ", 1)[1])["bytes"] / run["requests"])
    return run


def row(label: str, run: dict, caves: bool) -> str:
    store = f" {run['store_us_per_request']:.0f} | {run['engine_us_per_request']:.0f} |" if caves else " | |"
    return (
        f"| {label} | {run['conns']} | {run['rps']:,.1f}{' †' if run['noisy'] else ''} | {run['p50_ms']:.2f} |"
        f" {run['p99_ms']:.2f} | {run['errors']} | {run['bytes_per_request']:,} | {run['server_us_per_request']:,.0f} |"
        f" {run['server_net_us_per_request']:,.0f} |"
        f"{store} {run['other_cpu']:.0%} |"
    )


HEADER = [
    "| server, lookup | conns | req/s | p50 ms | p99 ms | errors | bytes/answer | server CPU µs/req"
    " | less idle | CAVES µs/req | engine µs/req | others' CPU |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
]


def peers(args, workdir: Path, rng: random.Random) -> list[str]:
    profiles = [p for p, _ in loaddata.generate(args.count, 1)]
    targets = {
        route: paths_file(paths(profiles, route, field, 5000, rng), workdir / f"{route}.paths")
        for route, field in (("nickname", "nickname"), ("username", "user_id"))
    }
    caves = start_cluster(args.count, "default", args.count, args.token, workdir)
    lines = [f"peers: {args.count} profiles (loaddata.py's shape), {args.conns} connections", "", *HEADER]
    env = caves.env()
    try:
        for impl in PEERS:
            server = Server(impl, env, workdir)
            try:
                server.wait_ready(args.token)
                for route, target in targets.items():
                    run = measure(server, target, args, args.conns, caves)
                    lines.append(row(f"{impl} {route}", run, True))
                    print(lines[-1], flush=True)
            finally:
                server.stop()
    finally:
        caves.stop()
    return lines


def before_after(args, workdir: Path, rng: random.Random, kinds: list[str]) -> list[str]:
    """paging and mix on the blog's data: the working tree against --against, on each store."""
    profiles = [p for p, _ in loaddata.documents("blog", args.count, 1, 0, LAYOUT)]
    targets = {"paging": paths_file(paths(profiles, "nickname", "nickname", 5000, rng), workdir / "paging.paths")}
    mixed = [
        *[f"/api/v1/id/{rng.randint(1, args.count)}" for _ in range(MIX["id"] * 50)],
        *paths(profiles, "nickname", "nickname", MIX["nickname"] * 50, rng),
        *paths(profiles, "username", "user_id", MIX["username"] * 50, rng),
        *[f"/api/v1/picture/raw/{rng.randint(1, args.images)}" for _ in range(MIX["picture/raw"] * 50)],
    ]
    targets["mix"] = paths_file(mixed, workdir / "mix.paths")
    roots = {"before": workdir / "before", "after": ROOT}
    roots["before"].mkdir()
    labels = {"before": f"{checkout(args.against, roots['before'])} (answers every match)", "after": git_commit()}
    lines = [
        f"blog-shaped data: {args.count} profiles, {len({p['nickname'] for p in profiles})} nicknames;"
        f" before: {labels['before']}; after: {labels['after']} (pages of 100)",
        "",
        *HEADER,
    ]
    for store in args.stores.split(","):
        caves = None
        if store == "caves":
            caves = start_cluster(args.count, "blog", args.images, args.token, workdir)
            env = caves.env(COUCHBASE_QUERY_TIMEOUT=str(args.timeout))
        else:
            db = str(ROOT / "data" / f"bench-blog-{args.count}.db")
            if not Path(db).exists():
                loader = ["--shape", "blog", "--count", str(args.count), "--images", str(args.images), "--seed", "1"]
                run_loaddata({}, *loader, "--token", args.token, "--db", db)
            seed(db, args.count, args.token)
            env = {"USERPROFILE_DB": db}
        try:
            for kind in kinds:
                conns = 32 if kind == "mix" else args.conns
                for side in ("before", "after"):
                    server = Server("ours-cb" if caves else "ours", env, workdir, roots[side])
                    try:
                        server.wait_ready(args.token)
                        run = measure(server, targets[kind], args, conns, caves)
                    finally:
                        server.stop()
                    lines.append(row(f"{store} {kind} {side}", run, caves is not None))
                    print(lines[-1], flush=True)
        finally:
            if caves:
                caves.stop()
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    rng = random.Random(1)
    report = [
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}, `bench/lookups.py {' '.join(sys.argv[1:])}`,"
        f" load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())}",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-lookups-") as tmp:
        if "peers" in args.what:
            report += [*peers(args, Path(tmp), rng), ""]
        kinds = [k for k in ("paging", "mix") if k in args.what]
        if kinds:
            report += before_after(args, Path(tmp), rng, kinds)
    text = "\n".join(report)
    print("\n" + text)
    out = BENCH / "results" / "raw" / f"lookups-{datetime.datetime.now():%Y%m%d-%H%M%S}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"kept in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
