#!/usr/bin/env python3
"""Run the blog's JMeter plan (jmeter/userprofile.jmx) headless and summarise it.

Without --target it starts the service itself on the embedded store (seeding the
database with loaddata.py when it is empty), on a free loopback port, with the
access log off. With --target it loads an already-running service or a load
balancer instead (then --token is needed).

The plan sends id lookups (the blog's test), or a mix by weights (--mix
id=70,nickname=10,username=10,picture=10) whose nicknames and usernames are those of
loaddata.py's data for --maxid and seed 1 (as `make run` and the k8s overlays seed it;
--lookups FILE for other data). It prints throughput, mean, p50, p95, p99 latency, the
samples by route and the error count read from the .jtl, and compares JMeter's sample
count with the service's own count of the mix's requests (the delta of
userprofile_requests_total on /metrics).
Exit status: 0 when there were samples, no errors and the counts agree; 1 otherwise.

    python3 jmeter/loadtest.py --duration 30 --threads 8
    python3 jmeter/loadtest.py --target http://LB:8080 --token "$TOKEN" --maxid 10000 \\
        --duration 180 --threads 64 --no-metrics-check     # several pods: /metrics is per pod

The target's scheme, host and port are the plan's: `--target https://lb.example:443` loads the
service through its TLS terminator. JMeter accepts any certificate (its HTTP samplers do not
verify them); this runner's own /metrics requests trust the system's CAs, or --ca-cert's.

The token is handed to JMeter in a private properties file (-q), never on the
command line (where ps shows it) nor as -J (which JMeter writes to its log).
--token-file reads it from a file (a JWT from the team's provider); --idp starts
Keycloak, serves in JWT mode and loads with an access token Keycloak issued:

    python3 jmeter/loadtest.py --idp --duration 30 --threads 8
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from testkit import ROOT, ServiceProcess, jmeter, run_loaddata
from testkit.jmeter import MIX_ROUTES, mix_properties, summarise, write_lookups
from testkit.scrape import metric

RESULTS = ROOT / "jmeter" / "results"  # git-ignored

# userprofile_requests_total{route="/api/v1/id",status="200"} 123  (labels in any order)


def log(msg: str) -> None:
    print(f"loadtest: {msg}", file=sys.stderr, flush=True)


def http_get(url: str, timeout: float = 5, tls: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=tls) as resp:  # nosec B310  # an http(s):// URL built from the target given on the command line
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def api_requests(base: str, tls: ssl.SSLContext | None = None) -> int:
    """Requests the service has answered on the mix's routes, all statuses (from /metrics)."""
    status, body = http_get(base + "/metrics", tls=tls)
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    text = body.decode()
    return int(sum(metric(text, "userprofile_requests_total", route=route) for route in MIX_ROUTES.values()))


# -- the service ---------------------------------------------------------------
def seed(db: Path, maxid: int) -> str:
    """Make sure the embedded store at db holds ids 1..maxid; return its token."""
    db.parent.mkdir(parents=True, exist_ok=True)
    # --if-empty: an existing store is reused as it is (seeding is idempotent but not free); no
    # COUCHBASE_HOST: this mode is the embedded store, whatever the shell has.
    run_loaddata(
        {"USERPROFILE_DB": str(db), "COUCHBASE_HOST": None}, "--count", str(maxid), "--seed", "1", "--if-empty"
    )
    import settings  # the project's own store API
    from stores import open_store

    store = open_store(settings.defaults({"USERPROFILE_DB": str(db)}))
    try:
        count, token = store.count(store.layout.profiles), store.read_token()
    finally:
        store.close()
    if count < maxid:
        raise SystemExit(
            f"loadtest: {db} holds {count} profiles, fewer than --maxid {maxid}: lower --maxid or use another --db"
        )
    if not token:
        raise SystemExit(f"loadtest: {db} holds no service token")
    return token


def start_service(db: Path, workers: int, log_path: Path, auth: dict | None = None) -> ServiceProcess:
    # No COUCHBASE_HOST: this mode is the embedded store, whatever the shell has.
    store = {"USERPROFILE_DB": str(db), "COUCHBASE_HOST": None, "ACCESS_LOG": "false"}
    svc = ServiceProcess({**store, **(auth or {})}, "--workers", str(workers), log_path=log_path)
    try:
        return svc.start(wait_for="/readyz")
    except RuntimeError as exc:
        raise SystemExit(f"loadtest: {exc}; see {log_path}") from None


def start_provider(work: Path) -> tuple[Any, str, dict]:
    """Keycloak on loopback (testkit/idp.py) and an access token it issued to the test client."""
    from testkit.idp import Keycloak

    log("starting Keycloak (20-90 s); its tokens live 5 minutes: keep --duration under 300")
    provider = Keycloak(work)
    provider.start()
    auth = {"AUTH_MODE": "jwt", "AUTH_ISSUER": provider.issuer(), "AUTH_AUDIENCE": "userprofile"}
    return provider, provider.token(), auth


# -- JMeter ---------------------------------------------------------------------
def run_jmeter(protocol: str, host: str, port: int, token: str, args, jtl: Path, jmeter_log: Path) -> None:
    # The plan's properties; the token goes through a private file (see the module docstring),
    # or the plan reads it from the file it is in (--token-file, --idp).
    credential = {"token_file": args.token_file.resolve()} if args.token_file else {"token": token}
    props = {
        "threads": args.threads,
        "duration": args.duration,
        "maxid": args.maxid,
        **mix_properties(args.mix),
        "lookups": args.lookups or "",
        **credential,
        "host": host,
        "port": port,
        "protocol": protocol,
    }
    fd, props_path = tempfile.mkstemp(prefix="userprofile-jmeter-", suffix=".properties")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            for key, value in props.items():
                f.write(f"{key}={value}\n")
        jtl.unlink(missing_ok=True)  # JMeter appends to an existing file
        cmd = jmeter.command(jmeter.PLAN, jtl, jmeter_log, Path(props_path), max_heap="1g")
        target = f"{protocol}://{host}:{port}"
        log(f"JMeter: {args.threads} threads, {args.duration} s, {target}, ids 1..{args.maxid}, mix {args.mix}")
        # Its console summary goes to stderr, so stdout stays the report alone.
        subprocess.run(
            cmd, check=True, cwd=RESULTS, stdout=sys.stderr, stderr=subprocess.STDOUT, timeout=args.duration + 120
        )
    finally:
        os.unlink(props_path)


def report(s: dict) -> str:
    lines = [
        f"samples       {s['samples']} in {s['seconds']:.1f} s",
        f"throughput    {s['throughput_per_s']:.1f} requests/s",
        f"latency ms    mean {s['mean_ms']:.2f}  p50 {s['p50_ms']:.0f}  p95 {s['p95_ms']:.0f}  "
        f"p99 {s['p99_ms']:.0f}  max {s['max_ms']:.0f}",
        f"errors        {s['errors']}" + (f"  {s['error_messages']}" if s["errors"] else ""),
        f"status codes  {s['response_codes']}",
        f"routes        {s['routes']}",
    ]
    if "metrics_delta" in s:
        agree = "agrees" if s["metrics_delta"] == s["samples"] else "DISAGREES"
        lines.append(f"/metrics      {s['metrics_delta']} requests of the mix counted by the service: {agree}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=30, help="seconds of load (default 30; the blog ran 180)")
    p.add_argument("--threads", type=int, default=8, help="JMeter threads, all started at once (default 8)")
    p.add_argument("--maxid", type=int, default=10000, help="ids drawn from 1..maxid (default 10000)")
    p.add_argument(
        "--mix",
        default="id=1",
        help="the routes' weights, e.g. id=70,nickname=10,username=10,picture=10 (default id=1: the blog's test)",
    )
    p.add_argument(
        "--lookups",
        type=Path,
        help="the nicknames and usernames to look up, a 'nickname,username' line each "
        "(default: those of loaddata.py --count MAXID --seed 1)",
    )
    p.add_argument(
        "--db",
        type=Path,
        default=ROOT / "data" / "loadtest.db",
        help="embedded store to serve, seeded with ids 1..maxid when empty (data/loadtest.db)",
    )
    p.add_argument("--workers", type=int, default=1, help="service processes (default 1)")
    p.add_argument(
        "--target", help="load this running service instead, e.g. http://10.0.0.5:8080 or https://lb.example"
    )
    p.add_argument(
        "--ca-cert", type=Path, help="PEM CA this runner trusts for an https target's /metrics (JMeter trusts any)"
    )
    p.add_argument(
        "--token",
        default=os.environ.get("USERPROFILE_TOKEN"),
        help="bearer token for --target (default $USERPROFILE_TOKEN)",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        help="the plan reads the bearer token from this file (a JWT from the team's provider, say); over --token",
    )
    p.add_argument(
        "--idp",
        action="store_true",
        help="JWT mode: start Keycloak (tools/install_keycloak.sh), serve with AUTH_MODE=jwt and load with an"
        " access token it issues by the client-credentials grant (no --target)",
    )
    p.add_argument(
        "--no-metrics-check",
        action="store_true",
        help="do not compare with /metrics (behind a load balancer each pod counts only its own)",
    )
    p.add_argument("--jtl", type=Path, help="CSV results file (default jmeter/results/<time>.jtl)")
    p.add_argument("--json", type=Path, help="also write the summary as JSON here")
    args = p.parse_args(argv)
    for name in ("duration", "threads", "maxid", "workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    try:
        mix_properties(args.mix)
    except ValueError as exc:
        p.error(str(exc))

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    jtl = (args.jtl or RESULTS / f"userprofile-{stamp}.jtl").resolve()
    jtl.parent.mkdir(parents=True, exist_ok=True)
    jmeter_log = jtl.with_suffix(".log")
    jmeter.jmeter_jar()  # installed before the service starts, so a failed install costs nothing
    weights = mix_properties(args.mix)
    if args.lookups is None and weights["weight_nickname"] + weights["weight_username"]:
        args.lookups = write_lookups(jtl.with_suffix(".lookups"), args.maxid, seed=1)

    svc = provider = None
    check_metrics = not args.no_metrics_check
    made_token_file = None
    if args.idp and args.target:
        p.error("--idp starts its own service: no --target")
    if args.idp:
        seed(args.db.resolve(), args.maxid)
        provider, token, auth = start_provider(jtl.parent)
        fd, name = tempfile.mkstemp(prefix="userprofile-token-")  # mode 0600
        with os.fdopen(fd, "w") as f:
            f.write(token)
        args.token_file = made_token_file = Path(name)
        svc = start_service(args.db.resolve(), args.workers, jtl.with_suffix(".service.log"), auth)
        base = svc.base
    elif args.target:
        if not args.token and not args.token_file:
            p.error("--target needs --token, --token-file or $USERPROFILE_TOKEN")
        base, token = args.target.rstrip("/"), str(args.token)
    else:
        token = seed(args.db.resolve(), args.maxid)
        svc = start_service(args.db.resolve(), args.workers, jtl.with_suffix(".service.log"))
        base = svc.base
        if args.workers > 1 and check_metrics:
            log("--workers > 1: each process keeps its own /metrics, so the counts are not compared")
            check_metrics = False
    url = urllib.parse.urlsplit(base)
    if url.scheme not in ("http", "https") or not url.hostname:
        p.error(f"--target must be an http:// or https:// URL, not {base!r}")
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    tls = ssl.create_default_context(cafile=args.ca_cert) if url.scheme == "https" else None

    if args.idp and args.workers > 1:
        check_metrics = False
    try:
        try:
            before = api_requests(base, tls) if check_metrics else 0
        except (OSError, RuntimeError) as exc:
            log(f"cannot read {base}/metrics ({exc}): --ca-cert names a private CA; --no-metrics-check skips it")
            return 1
        try:
            run_jmeter(url.scheme, host, port, token, args, jtl, jmeter_log)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log(f"JMeter failed ({exc}); see {jmeter_log}")
            return 1
        summary = summarise(jtl)
        if check_metrics:
            summary["metrics_delta"] = api_requests(base, tls) - before
    finally:
        if svc is not None:
            code = svc.stop(timeout=30)  # the service drains and exits 0
            if code != 0:
                log(f"the service exited with {code} on SIGTERM")
        if provider is not None:
            provider.stop()
        if made_token_file is not None:
            made_token_file.unlink()
    summary.update(
        {"threads": args.threads, "duration": args.duration, "maxid": args.maxid, "mix": args.mix, "jtl": str(jtl)}
    )
    print(report(summary))
    print(f"results       {jtl}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")

    ok = summary["samples"] > 0 and summary["errors"] == 0
    if check_metrics and summary["metrics_delta"] != summary["samples"]:
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
