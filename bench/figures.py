"""bench/README.md's figures, made from the committed results in bench/results/.

The README marks each generated block with `<!-- figures:NAME -->` ... `<!-- /figures -->`;
this rewrites what is between the marks from results.json (the embedded store) and
couchbase.json (CAVES), so the README never holds a figure copied by hand:

    .venv/bin/python bench/figures.py            # rewrite the blocks (make bench-figures)
    .venv/bin/python bench/figures.py --check    # exit 1, naming the blocks, when they differ

tests/test_docs.py checks that the README's blocks are what this makes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from capacity import table as capacity_table
from measure import COUCHBASE_IMPLS, IMPLS, TARGETS

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
README = BENCH / "README.md"
BLOCK = re.compile(r"(<!-- figures:([\w-]+) -->\n)(.*?)(<!-- /figures -->)", re.S)
PEERS = {"express-cb": "Express", "fastapi-cb": "FastAPI", "node-cb": "bare node:http"}


def label(impl: str) -> str:
    return IMPLS[impl].split(" (")[0].replace(" on CAVES", "")


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def flags(run: dict) -> str:
    return (" *" if run["generator_bound"] else "") + (" †" if run["noisy"] else "")


def the_run(result: dict) -> str:
    meta, versions = result["meta"], result["meta"]["machine"]["versions"]
    machine = meta["machine"]
    at = f", ours at {meta['commit']}" if meta.get("commit") else ""
    sdks = (
        f", Python `couchbase` {versions['couchbase']}, Node.js `couchbase` {versions['couchbase-node']},"
        f" CAVES {meta.get('caves', '?')}"
        if "couchbase" in versions
        else f", better-sqlite3 {versions['better-sqlite3']}"
    )
    return (
        f"Run {meta['date']} (`{meta['command']}`{at}): the median of {meta.get('repeat', 1)} runs of"
        f" {meta['duration_s']:g} s per point; {machine['cpu']}, {machine['cores']} cores, Linux"
        f" {machine['kernel'].split('-')[0]}; Python {versions['python']}, FastAPI {versions['fastapi']},"
        f" uvicorn {versions['uvicorn']}, Node.js {versions['node'].lstrip('v')}, Express {versions['express']}{sdks}."
    )


def runs_table(result: dict, couchbase: bool) -> list[str]:
    head = "| implementation | conns | req/s | p50 ms | p99 ms | errors | server CPU µs/request |"
    rule = "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    if couchbase:
        head, rule = head + " CAVES µs/request |", rule + " ---: |"
    lines = [head, rule]
    for r in result["runs"]:
        row = (
            f"| {label(r['impl'])} | {r['conns']} | {r['rps']:,.0f}{flags(r)} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
            f" {r['errors']} | {r['server_us_per_request']:.0f} |"
        )
        if couchbase:
            row += f" {r['store_us_per_request']:.0f} |"
        lines.append(row)
    return lines


def at_32(result: dict) -> dict[str, dict]:
    return {r["impl"]: r for r in result["runs"] if r["conns"] == 32}


def embedded() -> str:
    result = load("results.json")
    by = at_32(result)
    ours = by["ours"]
    ratios = " and ".join(
        f"{ours['rps'] / by[peer]['rps']:.2f}× {label(peer)}'s" for peer in ("fastapi", "express") if peer in by
    )
    cpu = " and ".join(
        f"{ours['server_us_per_request'] / by[peer]['server_us_per_request']:.2f}× {label(peer)}'s"
        for peer in ("fastapi", "express")
        if peer in by
    )
    return "\n".join(
        [
            the_run(result),
            "",
            *runs_table(result, couchbase=False),
            "",
            f"At 32 connections ours serves {ratios} requests per second, at {cpu} CPU per request.",
        ]
    )


def couchbase() -> str:
    result = load("couchbase.json")
    by = at_32(result)
    ours = by["ours-cb"]
    lines = [
        the_run(result),
        "",
        *runs_table(result, couchbase=True),
        "",
        "| aim at 32 connections (server CPU per request, ours / peer) | measured | met |",
        "| --- | --- | :---: |",
    ]
    for peer, limit in TARGETS.items():
        if peer in by:
            mine, theirs = ours["server_us_per_request"], by[peer]["server_us_per_request"]
            x = mine / theirs
            lines.append(
                f"| ours ≤ {limit:.2f}× {PEERS[peer]} | {x:.2f}× ({mine:.0f} vs {theirs:.0f} µs)"
                f" | {'yes' if x <= limit else 'no'} |"
            )
    errors = sum(r["errors"] for r in result["runs"] if r["impl"] == "ours-cb")
    lines.append(f"| ours: 0 errors at every connection count | {errors} | {'yes' if errors == 0 else 'no'} |")
    if "ours-cb-obs" in by:
        on = by["ours-cb-obs"]["server_us_per_request"]
        lines += [
            "",
            f"With the SDK's tracing and metrics on (`COUCHBASE_SDK_OBSERVABILITY=true`) ours used {on:.0f} µs per"
            f" request at 32 connections against {ours['server_us_per_request']:.0f} as it ships"
            f" ({on / ours['server_us_per_request']:.2f}×).",
        ]
    return "\n".join(lines)


def capacity() -> str:
    return capacity_table(rate=10000, busy=0.7, conns=32)


MAKERS = {"embedded": embedded, "couchbase": couchbase, "capacity": capacity}
assert all(impl in IMPLS for impl in (*COUCHBASE_IMPLS, *PEERS))


def rewritten(text: str) -> str:
    """``text`` with every marked block made anew; an unknown block name is an error."""

    def make(m: re.Match) -> str:
        if m.group(2) not in MAKERS:
            raise SystemExit(f"bench/figures.py: no maker for the block {m.group(2)!r} in {README.name}")
        return f"{m.group(1)}{MAKERS[m.group(2)]()}\n{m.group(4)}"

    return BLOCK.sub(make, text)


def stale(text: str) -> list[str]:
    """The names of the blocks whose text differs from what the results make."""
    fresh = {m.group(2): m.group(3) for m in BLOCK.finditer(rewritten(text))}
    return [m.group(2) for m in BLOCK.finditer(text) if fresh[m.group(2)] != m.group(3)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when a block is out of date")
    args = p.parse_args(argv)
    text = README.read_text()
    if args.check:
        late = stale(text)
        if late:
            print(f"bench/README.md: out of date: {', '.join(late)} (make bench-figures)", file=sys.stderr)
        return 1 if late else 0
    README.write_text(rewritten(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
