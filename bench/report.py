"""The benchmarks' report (bench/run.py writes it): the machine and the versions measured, the
Markdown tables with their ratios and aims, and the charts."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path

from measure import BENCH, COUCHBASE_IMPLS, GENERATOR_BOUND, IMPLS, NOISY, TARGETS, command_output


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
