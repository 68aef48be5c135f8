"""JMeter for the load test (jmeter/loadtest.py), the fleet (tools/fleet/clients.py) and the
Kubernetes e2e (tools/k8s/e2e.py): the launcher, installed on first use, the plan's request mix
and its lookups file, and the numbers of its CSV results."""

from __future__ import annotations

import csv
import math
import subprocess
from pathlib import Path

from testkit import LAYOUT, ROOT

INSTALL = ROOT / "tools" / "install_jmeter.sh"
# The routes of the plan's mix (its weight_<name> properties) and the /metrics route of each.
MIX_ROUTES = {
    "id": "/api/v1/id",
    "nickname": "/api/v1/nickname",
    "username": "/api/v1/username",
    "picture": "/api/v1/picture/raw",
}


def mix_properties(mix: str) -> dict[str, int]:
    """``id=70,nickname=10,...`` as the plan's weight_<route> properties (routes not named: 0)."""
    weights = dict.fromkeys(MIX_ROUTES, 0)
    for part in mix.split(","):
        name, _, weight = part.partition("=")
        if name.strip() not in MIX_ROUTES or not weight.strip().isdigit():
            raise ValueError(f"a mix is route=weight,... of the routes {', '.join(MIX_ROUTES)}: {mix!r}")
        weights[name.strip()] = int(weight)
    if not sum(weights.values()):
        raise ValueError(f"the weights of a mix add up to more than 0: {mix!r}")
    return {f"weight_{name}": weight for name, weight in weights.items()}


def write_lookups(path: Path, count: int, seed: int, shape: str = "default") -> Path:
    """The plan's ``lookups`` file: a "nickname,username" line for each profile of the data
    ``loaddata.py --count --seed --shape`` writes, made again here (the same seed, the same
    documents), so it needs no store."""
    import loaddata

    with open(path, "w", encoding="utf-8") as out:
        for profile, _ in loaddata.documents(shape, count, seed, 0, LAYOUT):
            out.write(f"{profile['nickname']},{profile['user_id']}\n")
    return path


def jmeter_jar() -> Path:
    """The JMeter launcher, installed from Maven Central on first use (tools/install_jmeter.sh)."""
    out = subprocess.run(["bash", str(INSTALL)], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def command(plan: Path, jtl: Path, log: Path, properties: Path, *extra: str, max_heap: str = "512m") -> list[str]:
    """JMeter without its GUI running ``plan``, its properties from a file (the token among them:
    never on a command line), its results in ``jtl`` as CSV with a header row whatever a local
    jmeter.properties says."""
    return [
        "java",
        "-Xms128m",
        f"-Xmx{max_heap}",
        "-jar",
        str(jmeter_jar()),
        "-n",
        "-t",
        str(plan),
        "-l",
        str(jtl),
        "-j",
        str(log),
        "-q",
        str(properties),
        "-Jjmeter.save.saveservice.output_format=csv",
        "-Jjmeter.save.saveservice.print_field_names=true",
        # No UDP shutdown listener: other JMeter runs on the machine may hold port 4445.
        "-Jjmeterengine.nongui.port=0",
        *extra,
    ]


def percentile(sorted_values: list[int], p: float) -> float:
    """Nearest-rank percentile, as JMeter's aggregate report computes it."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def summarise(jtl: Path) -> dict:
    """Read JMeter's CSV results (header row required) into the report's numbers."""
    with open(jtl, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "elapsed" not in rows[0]:
        raise SystemExit(f"{jtl} has no CSV header row")
    elapsed = sorted(int(r["elapsed"]) for r in rows)
    errors = [r for r in rows if r["success"] != "true"]
    codes: dict[str, int] = {}
    routes: dict[str, int] = {}
    for r in rows:
        codes[r["responseCode"]] = codes.get(r["responseCode"], 0) + 1
        route = r.get("URL", "").partition("/api/v1/")[2].rpartition("/")[0]
        routes[route] = routes.get(route, 0) + 1
    if rows:
        start = min(int(r["timeStamp"]) for r in rows)
        end = max(int(r["timeStamp"]) + int(r["elapsed"]) for r in rows)
        span = max(end - start, 1) / 1000
    else:
        span = 0.0
    return {
        "samples": len(rows),
        "errors": len(errors),
        # A few distinct causes, one short line each (assertion messages run over several lines).
        "error_messages": sorted({f"{r['responseCode']} {r['responseMessage']}".splitlines()[0][:120] for r in errors})[
            :5
        ],
        "response_codes": codes,
        "routes": routes,  # samples by the route of their URL: id, nickname, username, picture/raw
        "seconds": round(span, 3),
        "throughput_per_s": round(len(rows) / span, 1) if span else 0.0,
        "mean_ms": round(sum(elapsed) / len(elapsed), 2) if elapsed else math.nan,
        "p50_ms": percentile(elapsed, 50),
        "p95_ms": percentile(elapsed, 95),
        "p99_ms": percentile(elapsed, 99),
        "max_ms": float(elapsed[-1]) if elapsed else math.nan,
    }
