"""One-CPU pods needed for a request rate, from the server CPU per request the benchmarks measured.

Reads bench/results/results.json (embedded store) and couchbase.json (CAVES)
and prints the markdown table of bench/README.md:

    .venv/bin/python bench/capacity.py
    .venv/bin/python bench/capacity.py --rate 10000 --busy 0.7 --conns 32

A pod is one server process with one CPU. It serves 1,000,000 / (µs per
request) requests/s with its CPU fully busy; planned at --busy of its CPU
(headroom for bursts and latency), it serves that share. Only the server's
own CPU counts: the store (a SQLite file in the pod, or the Couchbase cluster)
and the load balancer are outside it.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from measure import COUCHBASE_IMPLS, IMPLS

RESULTS = Path(__file__).resolve().parent / "results"
ONE_CPU = ("ours", "fastapi", "express", "ours-cb", "fastapi-cb", "express-cb", "node-cb")  # not ours-2w


def rows(conns: int) -> list[tuple[str, dict]]:
    """(store, run) of each one-CPU implementation at this concurrency, from both result files."""
    found = []
    for name, store, on_couchbase in (
        ("results.json", "embedded SQLite", False),
        ("couchbase.json", "Couchbase (CAVES)", True),
    ):
        path = RESULTS / name
        if path.exists():
            by = {(r["impl"], r["conns"]): r for r in json.loads(path.read_text())["runs"]}
            found += [
                (store, by[(impl, conns)])
                for impl in ONE_CPU
                if (impl in COUCHBASE_IMPLS) == on_couchbase and (impl, conns) in by
            ]
    return found


def table(rate: float, busy: float, conns: int) -> str:
    lines = [
        f"| store | implementation | server CPU µs/request | req/s per fully busy CPU | pods for {rate:,.0f}"
        f" req/s at 100% CPU | pods at {busy:.0%} CPU |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for store, r in rows(conns):
        us = r["server_us_per_request"]
        cores = rate * us / 1e6
        label = IMPLS[r["impl"]].split(" (")[0].replace(" on CAVES", "")
        lines.append(
            f"| {store} | {label} | {us:.0f} | {1e6 / us:,.0f} |"
            f" {math.ceil(cores)} ({cores:.2f}) | {math.ceil(cores / busy)} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=10000, help="requests per second to serve (default 10000)")
    p.add_argument("--busy", type=float, default=0.7, help="planned CPU utilisation of a pod (default 0.7)")
    p.add_argument("--conns", type=int, default=32, help="the measured concurrency to use (default 32)")
    args = p.parse_args(argv)
    print(table(args.rate, args.busy, args.conns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
