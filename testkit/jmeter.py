"""JMeter for the load test (jmeter/loadtest.py), the fleet (tools/fleet/clients.py) and the
Kubernetes e2e (tools/k8s/e2e.py): the launcher, installed on first use, the plan (paced or not),
its request mix, properties and lookups file, a run in the background, and the numbers of its CSV
results."""

from __future__ import annotations

import csv
import math
import subprocess
import time
from pathlib import Path
from typing import Self

from testkit import LAYOUT, ROOT, end

INSTALL = ROOT / "tools" / "install_jmeter.sh"
PLAN = ROOT / "jmeter" / "userprofile.jmx"  # the blog's plan, the project's one
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


def paced_plan(workdir: Path, rate: float, name: str = "userprofile-paced") -> Path:
    """The plan with a Constant Throughput Timer added: ``rate`` requests/s in all, so that JMeter
    shares the machine with what it loads instead of taking all of it."""
    timer = (
        '<ConstantThroughputTimer guiclass="TestBeanGUI" testclass="ConstantThroughputTimer" '
        'testname="pacing"><intProp name="calcMode">1</intProp>'
        f"<doubleProp><name>throughput</name><value>{rate * 60:.1f}</value><savedValue>0.0</savedValue>"
        "</doubleProp></ConstantThroughputTimer>\n        <hashTree/>\n        "
    )
    text = PLAN.read_text()
    marker = "<HTTPSamplerProxy "
    assert text.count(marker) == 1
    plan = workdir / f"{name}.jmx"
    plan.write_text(text.replace(marker, timer + marker))
    return plan


def write_properties(path: Path, properties: dict) -> Path:
    """The plan's properties in a file only its owner reads: the token is among them, and never goes
    on a command line (where ps shows it) nor in a -J (which JMeter writes to its log)."""
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
    return path


class Background:
    """JMeter running a plan in the background, every sample flushed at once to ``<name>.jtl`` in
    workdir, so that the results are whole whenever it is stopped or read."""

    def __init__(self, workdir: Path, name: str, plan: Path, properties: dict, *extra: str):
        self.workdir, self.name = workdir, name
        self.jtl = workdir / f"{name}.jtl"
        self.jtl.unlink(missing_ok=True)  # JMeter appends: an earlier run's samples would count as this one's
        props = write_properties(workdir / f"{name}.properties", properties)
        self.cmd = command(
            plan,
            self.jtl,
            workdir / f"{name}.log",
            props,
            "-Jjmeter.save.saveservice.autoflush=true",
            "-Jsummariser.out=false",
            *extra,
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> Self:
        with open(self.workdir / f"{self.name}.out", "ab") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait_samples(self, count: int, timeout: float) -> Self:
        """JMeter takes seconds to start: until its results hold more than ``count`` samples."""
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        while not (self.jtl.exists() and self.jtl.read_text().count("\n") > count):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"JMeter {self.name} wrote no samples (see {self.workdir / self.name}.log)")
            time.sleep(0.2)
        return self

    def finish(self, timeout: float) -> dict:
        """Until it ends by itself (its duration): the summary of its results."""
        assert self.proc is not None, "start() first"
        self.proc.wait(timeout)
        return summarise(self.jtl)

    def stop(self) -> None:
        if self.proc:
            end(self.proc, 20)


def error_kind(row: dict) -> str:
    """A failed sample's cause in one short line (assertion messages run over several)."""
    return f"{row['responseCode']} {row['responseMessage']}".splitlines()[0][:80]


def read_samples(jtl: Path) -> list[tuple[float, int, bool, str]]:
    """(start, ms, success, error kind) of every sample in a JMeter CSV results file."""
    with open(jtl, newline="") as f:
        return [
            (
                int(r["timeStamp"]) / 1000,
                int(r["elapsed"]),
                r["success"] == "true",
                "" if r["success"] == "true" else error_kind(r),
            )
            for r in csv.DictReader(f)
            if r.get("elapsed", "").isdigit()
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
    kinds: dict[str, int] = {}
    for r in errors:
        kinds[error_kind(r)] = kinds.get(error_kind(r), 0) + 1
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
        "error_kinds": kinds,  # failed samples by cause
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
