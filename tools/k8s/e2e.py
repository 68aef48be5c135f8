"""The blog's experiment on a real Kubernetes: JMeter through the Service's ClusterIP while the
cluster changes the pods (`make k8s-e2e`; tests/test_k8s.py asserts the figures).

For each store (the embedded one, then CAVES as the Couchbase) it starts the one-node cluster
(cluster.py up), runs JMeter with the project's plan (paced, keep-alive) from inside the
cluster's network namespace for the whole run, and in turn:

    steady      4 pods, nothing changes
    rollout     kubectl rollout restart
    delete      kubectl delete pod (one of the 4)
    scale-in    kubectl scale 4 -> 2 (the HPA is removed for every scenario but its own)
    scale-out   kubectl scale 2 -> 4; the new pods' share of requests 30 to 60 s after they are Ready
    hpa         the HPA back, a second JMeter adds load until it scales out, then stops; back to 4

Each scenario is a window of the one JMeter run: requests and errors (JMeter's), the answers each pod
counted (its own /metrics, looked at every second), p50/p99 against steady. Prints a table and
writes jmeter/results/k8s-e2e.json; exit status 0 when every figure is met.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from testkit import ROOT, jmeter
from testkit.jmeter import mix_properties, percentile, read_samples, write_lookups

from . import cluster
from . import kubectl as control
from .config import NAMESPACE, RUN
from .kubectl import wait_for
from .watch import Watch

RESULTS = ROOT / "jmeter" / "results"
SCENARIOS = ("steady", "rollout", "delete", "scale-in", "scale-out", "hpa")
MIN_SHARE = 0.40
MAXID = 10000
# On CAVES, a few nickname and username lookups: the SQL++ engine beside it reads all 10,000 profile
# files for each (its file datastore has no index), 1 to 2 s of a busy core, so at 200 requests/s
# one in 2,000 of each (0.2 lookups/s) keeps its queue short. Values of the seeded data (--seed 1).
MIXES = {"embedded": "id=1", "caves": "id=1998,nickname=1,username=1"}


def start_jmeter(
    workdir: Path, name: str, host: str, rate: float, duration: int, threads: int = 16, mix: str = "id=1"
) -> jmeter.Background:
    """The project's plan paced at ``rate`` requests/s in all, in the background, once it has samples."""
    weights = mix_properties(mix)
    only_ids = weights["weight_id"] == sum(weights.values())
    lookups = "" if only_ids else write_lookups(workdir / "lookups.csv", MAXID, seed=1)
    properties = {"token": (RUN / "token").read_text(), "host": host, "port": 8080, "threads": threads}
    properties |= {"duration": duration, "maxid": MAXID, "lookups": lookups, **weights}
    plan = jmeter.paced_plan(workdir, rate, name)
    return jmeter.Background(workdir, name, plan, properties).start().wait_samples(20, 90)


def kubectl(*args: str, timeout: float = 300) -> str:
    """kubectl in the service's namespace; its output."""
    return control.kubectl("-n", NAMESPACE, *args, capture=True, timeout=timeout).stdout


def pods_now() -> int:
    return len(
        json.loads(kubectl("get", "pods", "-l", "app.kubernetes.io/name=userprofile-service", "-o", "json"))["items"]
    )


def window(name: str, start: float, end: float, samples, watch: Watch, **extra) -> dict:
    inside = [s for s in samples if start <= s[0] < end]
    errors: dict[str, int] = {}
    for s in inside:
        if not s[2]:
            errors[s[3]] = errors.get(s[3], 0) + 1
    served = watch.served(start, end)
    return {
        "scenario": name,
        "seconds": round(end - start, 1),
        "requests": len(inside),
        "jmeter_errors": sum(errors.values()),
        "error_kinds": errors,
        "service_ok": sum(ok for ok, _ in served.values()),
        "service_other": sum(o for _, o in served.values()),
        "p50_ms": percentile(sorted(s[1] for s in inside if s[2]), 50),
        "p99_ms": percentile(sorted(s[1] for s in inside if s[2]), 99),
        "pods_served": {n: ok for n, (ok, _) in sorted(served.items())},
        **extra,
    }


def inside(store: str, only: list[str], rate: float, hpa_rate: float, threads: int, workdir: Path) -> list[dict]:
    """The scenarios, run inside the cluster's network namespace."""
    watch = Watch(RUN).start()
    host = kubectl("get", "svc", "userprofile-service", "-o", "jsonpath={.spec.clusterIP}")
    # The HPA acts in its own scenario only: elsewhere it would change the pod counts the other
    # scenarios count on (a rollout's new pods, busy starting, can make it scale out), and its
    # minimum of 4 forbids the scale-in. What it set is undone first.
    kubectl("delete", "hpa", "userprofile-service", "--ignore-not-found")
    kubectl("scale", "deploy/userprofile-service", "--replicas=4")
    wait_for("4 pods Ready", lambda: pods_now() == 4 and len(watch.ready_names()) == 4, 120)
    jm = start_jmeter(workdir, "jmeter", host, rate, duration=3600, threads=threads, mix=MIXES[store])
    marks: list[tuple[str, float, float, dict]] = []
    failed: dict = {}
    try:
        if "steady" in only:
            failed["scenario"], t0 = "steady", time.time()
            time.sleep(30)
            marks.append(("steady", t0, time.time(), {}))
        if "rollout" in only:
            failed["scenario"], t0 = "rollout", time.time()
            time.sleep(5)
            kubectl("rollout", "restart", "deploy/userprofile-service")
            kubectl("rollout", "status", "deploy/userprofile-service", "--timeout=240s", timeout=260)
            done = time.time()
            wait_for("old pods gone", lambda: pods_now() == 4, 60)
            time.sleep(5)
            marks.append(("rollout", t0, time.time(), {"rollout_s": round(done - t0 - 5, 1)}))
        if "delete" in only:
            failed["scenario"], t0 = "delete", time.time()
            time.sleep(5)
            victim = sorted(watch.ready_names())[0]
            kubectl("delete", "pod", victim, "--wait=true", timeout=120)
            kubectl("rollout", "status", "deploy/userprofile-service", "--timeout=120s", timeout=140)
            time.sleep(5)
            marks.append(("delete", t0, time.time(), {"deleted": victim}))
        if "scale-in" in only:
            failed["scenario"], t0 = "scale-in", time.time()
            time.sleep(5)
            kubectl("scale", "deploy/userprofile-service", "--replicas=2")
            wait_for("2 pods left", lambda: pods_now() == 2, 90)
            time.sleep(5)
            marks.append(("scale-in", t0, time.time(), {}))
        if "scale-out" in only:
            failed["scenario"], t0 = "scale-out", time.time()
            before = watch.ready_names()
            kubectl("scale", "deploy/userprofile-service", "--replicas=4")
            wait_for(
                "4 pods Ready",
                lambda: (
                    len(watch.ready_names()) == 4
                    and len(watch.ready_names() - before) >= 2
                    and all(watch.pods[n].ready_at for n in watch.ready_names() - before)
                ),
                120,
            )
            new = watch.ready_names() - before
            ready = max(watch.pods[n].ready_at or 0 for n in new)
            time.sleep(max(0.0, ready + 62 - time.time()))
            share_window = watch.served(ready + 30, ready + 60)
            total = sum(ok for ok, _ in share_window.values())
            share = sum(share_window.get(n, (0, 0))[0] for n in new) / total if total else 0.0
            marks.append(
                (
                    "scale-out",
                    t0,
                    time.time(),
                    {"new_pods": sorted(new), "new_share": round(share, 3), "share_requests": total},
                )
            )
        if "hpa" in only:
            failed["scenario"], t0 = "hpa", time.time()
            cluster.apply_overlay(store)  # the HPA back, as the overlay has it
            extra = start_jmeter(workdir, "jmeter-hpa", host, hpa_rate, duration=600)
            try:
                wait_for("the HPA scaling out", lambda: watch.replicas and watch.replicas[-1][1] > 4, 240)
                wait_for("the new pods Ready", lambda: watch.replicas[-1][2] == watch.replicas[-1][1], 120)
                time.sleep(10)
            finally:
                extra.stop()
            out_at = time.time()
            wait_for("the HPA scaling back in", lambda: watch.replicas[-1][1] == 4 and pods_now() == 4, 240)
            time.sleep(5)
            series = [(round(t - t0), r, ready, d) for t, r, ready, d in watch.replicas if t >= t0]
            marks.append(
                (
                    "hpa",
                    t0,
                    time.time(),
                    {
                        "max_replicas": max(r for _, r, _, _ in series),
                        "final_replicas": series[-1][1],
                        "in_after_load_s": round(time.time() - out_at, 1),
                        "replicas_over_time": compress(series),
                        "extra_jtl": str(extra.jtl),
                    },
                )
            )
        failed.clear()
    except (RuntimeError, subprocess.SubprocessError) as exc:
        failed["error"] = str(exc)[-300:]
    finally:
        jm.stop()
        watch.stop()
    samples = read_samples(jm.jtl)
    results = []
    for name, start, end, extra_info in marks:
        more = read_samples(Path(extra_info.pop("extra_jtl"))) if "extra_jtl" in extra_info else []
        results.append(window(name, start, end, samples + more, watch, **extra_info))
    if failed:  # the scenario that could not finish, and why
        results.append(
            {
                "scenario": failed["scenario"],
                "error": failed.get("error", "interrupted"),
                "requests": 0,
                "jmeter_errors": 0,
                "service_other": 0,
            }
        )
    return results


def compress(series: list[tuple[int, int, int, int]]) -> list[list[int]]:
    """[seconds, replicas, ready, HPA desired] at each change only."""
    out: list[list[int]] = []
    for s in series:
        if not out or out[-1][1:] != list(s[1:]):
            out.append(list(s))
    return out


def verdict(rows: list[dict]) -> list[str]:
    """The figures each scenario must reach; what is not met."""
    bad = []
    for r in rows:
        if "error" in r:
            bad.append(f"{r['store']} {r['scenario']}: did not finish: {r['error']}")
            continue
        failed = r["jmeter_errors"] + r["service_other"]
        if failed or not r["requests"]:
            bad.append(f"{r['store']} {r['scenario']}: {failed} failed of {r['requests']}")
        if r["scenario"] == "scale-out" and r.get("new_share", 0) < MIN_SHARE:
            bad.append(f"{r['store']} scale-out: the new pods served {r.get('new_share', 0):.0%} (< 40%)")
        if r["scenario"] == "hpa" and not (r["max_replicas"] > 4 and r["final_replicas"] == 4):
            bad.append(f"{r['store']} hpa: replicas {r['max_replicas']} at most, {r['final_replicas']} at the end")
    return bad


def table(rows: list[dict]) -> str:
    lines = [
        "| store | scenario | requests | JMeter errors | service 200 / other | p50 ms (steady) | "
        "p99 ms (steady) | pods served | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    steady = {r["store"]: r for r in rows if r["scenario"] == "steady"}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['store']} | {r['scenario']} | did not finish: {r['error'][:100]} |")
            continue
        s = steady.get(r["store"], r)
        note = ""
        if "new_share" in r:
            note = f"new pods' share 30-60 s after Ready: {r['new_share']:.0%}"
        elif "max_replicas" in r:
            note = " ".join(f"{t}s:{n}" for t, n, _, _ in r["replicas_over_time"])
            note = f"replicas 4 -> {r['max_replicas']} -> {r['final_replicas']} ({note})"
        elif "rollout_s" in r:
            note = f"rollout {r['rollout_s']} s"
        lines.append(
            f"| {r['store']} | {r['scenario']} | {r['requests']} | {r['jmeter_errors']} | "
            f"{r['service_ok']} / {r['service_other']} | {r['p50_ms']:.0f} ({s['p50_ms']:.0f}) | "
            f"{r['p99_ms']:.0f} ({s['p99_ms']:.0f}) | {len(r['pods_served'])} | {note} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m tools.k8s.e2e", description=__doc__.split("\n\n")[0])
    p.add_argument("--stores", nargs="+", choices=["embedded", "caves"], default=["embedded", "caves"])
    p.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument(
        "--caves-only",
        nargs="+",
        choices=SCENARIOS,
        default=list(SCENARIOS),
        help="the scenarios on CAVES (default all)",
    )
    p.add_argument("--rate", type=float, default=200, help="JMeter's requests/s throughout (default 200)")
    # kube-proxy picks a pod at random for each new connection: the new pods' share is a sample of
    # (connections x reconnections), so 16 connections spread it by +-12%, 64 by +-6% (one run in six
    # fell under 40%), 256 by +-3%: the 40% the test asks is then over three spreads below the 50% expected.
    p.add_argument("--threads", type=int, default=256, help="JMeter's threads, each one connection (default 256)")
    p.add_argument(
        "--hpa-rate", type=float, default=1000, help="the added load that makes the HPA scale out (default 1000)"
    )
    p.add_argument("--json", type=Path, default=RESULTS / "k8s-e2e.json")
    p.add_argument("--inside", help=argparse.SUPPRESS)  # store: run the scenarios in this namespace
    args = p.parse_args(argv)
    if args.inside:
        workdir = Path(args.json).resolve().parent
        rows = inside(args.inside, args.only, args.rate, args.hpa_rate, args.threads, workdir)
        args.json.write_text(json.dumps(rows, indent=1))
        return 0

    cluster.need_host()
    started = time.monotonic()
    report: dict = {"stores": {}, "rows": []}
    for store in args.stores:
        only = [s for s in args.only if store == "embedded" or s in args.caves_only]
        workdir = RESULTS / f"k8s-{store}"
        workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        try:
            cluster.up(store)
            pid = control.holder_pid()
            assert pid is not None, "the cluster's holder is gone"
            subprocess.run(
                [
                    *control.in_cluster(pid),
                    sys.executable,
                    "-m",
                    "tools.k8s.e2e",
                    "--inside",
                    store,
                    "--only",
                    *only,
                    "--rate",
                    str(args.rate),
                    "--hpa-rate",
                    str(args.hpa_rate),
                    "--threads",
                    str(args.threads),
                    "--json",
                    str(workdir / "rows.json"),
                ],
                check=True,
                cwd=ROOT,
            )
            rows = json.loads((workdir / "rows.json").read_text())
            first = float((RUN / "first_pod_ready_seconds").read_text())
        finally:
            cluster.down()
        for r in rows:
            r["store"] = store
        report["rows"] += rows
        report["stores"][store] = {"first_pod_ready_s": first, "seconds": round(time.monotonic() - t0)}
    report["seconds"] = round(time.monotonic() - started)
    report["failures"] = verdict(report["rows"])
    print(table(report["rows"]))
    for store, s in report["stores"].items():
        print(
            f"{store}: cluster from nothing to first pod Ready {s['first_pod_ready_s']:.0f} s; "
            f"up, scenarios and down {s['seconds']} s"
        )
    print(
        f"k8s-e2e: {report['seconds']} s in all; "
        + ("every figure met" if not report["failures"] else "NOT MET: " + "; ".join(report["failures"]))
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"results: {args.json}")
    return 0 if not report["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
