"""The fleet's scenarios (this package's __init__ describes them) and `run`, which runs those asked for
side by side where they do not disturb each other."""

from __future__ import annotations

import math
import secrets
import select
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

from testkit.scrape import metric

from .balancers import ENDPOINT_DELAY_SECONDS, Fleet
from .clients import KINDS, Client, ClientProcess, jmeter_client
from .delay import DelayProxyProcess
from .instances import Instance, grace_seconds, log, seed_store
from .report import STEADY_WINDOW, Row, row


def scenario_rolling(
    workdir: Path,
    db: Path,
    token: str,
    rate: float,
    balancers: list[str],
    with_jmeter: bool,
    steady: float = 8,
    nginx_follows: str = "slots",
) -> list[Row]:
    """A rolling restart of 4 instances under every client kind through every balancer at once."""
    fleet = Fleet("rolling", db, workdir, balancers, 4, capacity=8, nginx_follows=nginx_follows)
    clients: list[tuple[str, ClientProcess]] = []
    jmeter = None
    jmeter_seconds = int(steady + 60)
    try:
        if with_jmeter:
            port = fleet.by_name["haproxy-tcp"].port
            jmeter = jmeter_client(fleet.dir, port, token, jmeter_seconds).start().wait_samples(50, 60)
        for b in fleet.balancers:
            for kind in KINDS:
                client = ClientProcess(kind, b.port, token, rate=rate, label=f"{b.name}/{kind}")
                clients.append((b.name, client.start()))
        time.sleep(steady)
        change_start = time.monotonic()
        log(f"rolling: restart begins ({len(clients)} client groups)")
        fleet.rolling_restart(grace_seconds())
        change_end = time.monotonic()
        log(f"rolling: restart done in {change_end - change_start:.1f} s; exit codes {fleet.exit_codes()}")
        time.sleep(2)
        drained = f"exit codes {distinct_exit_codes(fleet)}, drained in {fleet.drain_seconds():.1f} s at most"
        follows = f"; nginx follows the endpoints by {nginx_follows}"
        rows = [
            row(
                "rolling restart",
                name,
                c.kind,
                c.stop(),
                change_start,
                change_end,
                note=drained + (follows if name == "nginx" else ""),
                exit_codes=fleet.exit_codes(),
                nginx_follows=nginx_follows,
            )
            for name, c in clients
        ]
        if jmeter:
            s = jmeter.finish(jmeter_seconds + 120)
            kinds = s["error_kinds"]
            rows.append(
                Row(
                    "rolling restart",
                    "haproxy-tcp",
                    "JMeter (HttpClient4)",
                    s["samples"],
                    kinds,
                    p99_change=s["p99_ms"],
                    note="p99 over the whole run (JMeter counts whole ms)",
                    extra={"exit_codes": fleet.exit_codes()},
                )
            )
        return rows
    finally:
        for _, c in clients:
            c.abort()
        if jmeter:
            jmeter.stop()
        fleet.stop()


def distinct_exit_codes(fleet: Fleet) -> list[int | None]:
    """Each exit code once, ascending; None (an instance that has not exited) last."""
    return sorted(set(fleet.exit_codes().values()), key=lambda code: math.inf if code is None else code)


def scenario_scale(
    workdir: Path, db: Path, token: str, rate: float, steady: float = 5, settle: float = 30, window: float = 30
) -> list[Row]:
    """Scale-out 2 -> 4 under load on L4, the new instances' share; then scale-in 4 -> 2."""
    fleet = Fleet("scale", db, workdir, ["haproxy-tcp"], 2, capacity=4)
    client = ClientProcess("blind", fleet.balancers[0].port, token, rate=rate, label="scale/blind")
    try:
        client.start()
        time.sleep(steady)
        out_start = time.monotonic()
        new = [fleet.scale_up(), fleet.scale_up()]
        ready = time.monotonic()
        log("scale: 2 -> 4 done; waiting for the share window")
        time.sleep(settle)
        before = {i.name: i.served() for i in fleet.instances}
        time.sleep(window)
        after = {i.name: i.served() for i in fleet.instances}
        served = {name: after[name] - before[name] for name in after}
        share = sum(served[i.name] for i in new) / max(1, sum(served.values()))
        in_start = time.monotonic()
        # The two first instances: whatever the recycling did, they hold client connections, so
        # what is measured is the drain of pinned connections (the ReplicaSet's own choice, by
        # time ready in log2 buckets and pod-deletion-cost, can be either pair).
        for inst in fleet.instances[:2]:
            fleet.retire(inst, grace_seconds())
        fleet.wait_retired()
        in_end = time.monotonic()
        time.sleep(2)
        outcomes = client.stop()
        out = [o for o in outcomes if o.start < in_start]
        inside = [o for o in outcomes if o.start >= in_start]
        return [
            row(
                "scale-out 2 -> 4",
                "haproxy-tcp",
                "blind",
                out,
                out_start,
                ready + settle + window,
                note=f"new instances served {share:.0%} ({sum(served[i.name] for i in new):,.0f} of "
                f"{sum(served.values()):,.0f}) in the {window:.0f} s from {settle:.0f} s after ready",
                share=share,
            ),
            row(
                "scale-in 4 -> 2",
                "haproxy-tcp",
                "blind",
                inside,
                in_start,
                in_end,
                steady=[o for o in out if o.start >= in_start - steady],
                note=f"exit codes {distinct_exit_codes(fleet)}, drained in {fleet.drain_seconds():.1f} s at most",
                exit_codes=fleet.exit_codes(),
            ),
        ]
    finally:
        client.abort()
        fleet.stop()


def scenario_idle_race(
    workdir: Path,
    db: Path,
    token: str,
    idle: float = 3,
    delay: float = 0.05,
    connections: int = 12,
    per_connection: int = 12,
) -> list[Row]:
    """Requests after pauses swept across the server's idle timeout, through 2 x 50 ms of network."""
    d = workdir / "idle"
    d.mkdir(parents=True, exist_ok=True)
    inst = Instance("idle-1", db, d, {"IDLE_TIMEOUT_SECONDS": str(idle)}).launch().ready_or_stop()
    try:
        proxy = DelayProxyProcess(inst.port, delay).start()
    except BaseException:
        inst.stop()
        raise
    try:
        # Pauses spread evenly over idle +- 0.4 s (a low-discrepancy sweep, the same for both kinds).
        n = connections * per_connection
        sweep = [idle - 0.4 + 0.8 * ((k * 0.6180339887) % 1) for k in range(n)]
        pauses = [[0.0, *sweep[i * per_connection : (i + 1) * per_connection]] for i in range(connections)]
        clients = [
            Client(
                kind, proxy.port, token, connections=connections, rate=0, pauses=pauses, label=f"idle/{kind}"
            ).start()
            for kind in ("hint", "check")
        ]
        for c in clients:
            for t in c.threads:
                t.join(per_connection * (idle + 1) + 30)
        rows = []
        for c in clients:
            outcomes = c.stop()[connections:]  # less each connection's first request
            failed_idle = sorted(round(o.idle, 3) for o in outcomes if o.result != "ok")
            where = f"; failed at idle {failed_idle[0]:.2f}..{failed_idle[-1]:.2f} s" if failed_idle else ""
            rows.append(
                row(
                    "idle race",
                    f"{delay * 1000:.0f} ms proxy",
                    c.kind,
                    outcomes,
                    0,
                    math.inf,
                    note=f"IDLE_TIMEOUT_SECONDS={idle:g}; pauses {idle - 0.4:g}..{idle + 0.4:g} s{where}",
                    failed_idle=failed_idle,
                    idle_timeout=idle,
                    delay=delay,
                )
            )
        return rows
    finally:
        proxy.stop()
        inst.stop()


def scenario_pipelining(
    workdir: Path, db: Path, token: str, write_timeout: float = 2, connections: int = 2, send_for: float = 10
) -> list[Row]:
    """Clients that pipeline requests and never read: how long until the service lets them go."""
    d = workdir / "pipelining"
    d.mkdir(parents=True, exist_ok=True)
    inst = Instance("pipe-1", db, d, {"WRITE_TIMEOUT_SECONDS": str(write_timeout)}).launch().ready_or_stop()
    try:
        served_before = inst.served()
        request = f"GET /api/v1/id/7 HTTP/1.1\r\nHost: fleet\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        batch = request * 64
        socks = [socket.create_connection(("127.0.0.1", inst.port)) for _ in range(connections)]
        for s in socks:
            s.setblocking(False)
        start = time.monotonic()
        sent = [0] * connections
        open_ = set(range(connections))
        released_at = math.nan
        # Send whenever a socket takes more, for at most send_for seconds or until the service closes.
        while open_ and time.monotonic() - start < send_for:
            _, writable, _ = select.select([], [socks[i] for i in open_], [], 0.05)
            for s in writable:
                i = socks.index(s)
                try:
                    sent[i] += s.send(batch) // len(request)
                except OSError:
                    open_.discard(i)
        stopped_sending = time.monotonic()
        # Connections open on the service, less the one asking: polled until none is left.
        while time.monotonic() - start < send_for + write_timeout + 20:
            if metric(inst.metrics(), "userprofile_connections_open") <= 1:
                released_at = time.monotonic()
                break
            time.sleep(0.1)
        answered = inst.served() - served_before
        for s in socks:
            s.close()
        release = released_at - start
        return [
            Row(
                "pipelining, never reading",
                "direct",
                f"{connections} connections",
                int(answered),
                {},
                note=f"WRITE_TIMEOUT_SECONDS={write_timeout:g}: released {release:.1f} s after the first "
                f"request ({released_at - stopped_sending:+.1f} s after the last was sent); "
                f"{answered / connections:,.0f} answers per connection, of {sum(sent):,} requests sent",
                extra={
                    "release_seconds": release,
                    "answers_per_connection": answered / connections,
                    "write_timeout": write_timeout,
                },
            )
        ]
    finally:
        inst.stop()


def scenario_nginx_reloads(workdir: Path, db: Path, token: str, rate: float, reloads: int = 8) -> list[Row]:
    """The control for nginx: as many reloads as a rolling restart of 4 makes, nothing else changed."""
    fleet = Fleet("reloads", db, workdir, ["nginx"], 4)
    nginx = fleet.balancers[0]
    clients = [ClientProcess(kind, nginx.port, token, rate=rate, label=f"reloads/{kind}") for kind in KINDS]
    try:
        for c in clients:
            c.start()
        time.sleep(STEADY_WINDOW)
        change_start = time.monotonic()
        for _ in range(reloads):
            nginx.reload()
            time.sleep(ENDPOINT_DELAY_SECONDS)
        change_end = time.monotonic()
        time.sleep(2)
        return [
            row(
                "nginx reloads alone",
                "nginx",
                c.kind,
                c.stop(),
                change_start,
                change_end,
                note=f"{reloads} reloads, the same servers",
            )
            for c in clients
        ]
    finally:
        for c in clients:
            c.abort()
        fleet.stop()


SCENARIOS = ("rolling", "scale", "idle", "pipelining", "jmeter", "reloads")


BALANCERS = ("haproxy-tcp", "haproxy-http", "nginx")


def run(
    only=SCENARIOS, rate: float = 200, balancers=BALANCERS, workdir: Path | None = None, nginx_follows: str = "slots"
) -> list[Row]:
    """The scenarios asked for, those that do not disturb each other at the same time."""
    for tool in ("haproxy", "nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"fleet: {tool} is not installed (tools/install_fleet.sh)")
    own_dir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="fleet-")) if own_dir else workdir
    token = secrets.token_hex(16)
    assert workdir is not None  # made above when not given
    db = seed_store(workdir, token)
    results: dict[str, list[Row]] = {}
    errors: list[BaseException] = []

    def job(name, fn, *args, **kwargs):
        def target():
            try:
                results[name] = fn(*args, **kwargs)
            except BaseException as exc:  # reported after the others have finished
                errors.append(exc)
                log(f"{name}: {exc!r}")

        t = threading.Thread(target=target, name=name)
        t.start()
        return t

    jobs = []
    if "rolling" in only or "jmeter" in only:
        behind = list(balancers) if "rolling" in only else []
        if "jmeter" in only and "haproxy-tcp" not in behind:
            behind.insert(0, "haproxy-tcp")  # JMeter's balancer
        jobs.append(
            job(
                "rolling",
                scenario_rolling,
                workdir,
                db,
                token,
                rate,
                behind,
                "jmeter" in only,
                nginx_follows=nginx_follows,
            )
        )
    if "scale" in only:
        jobs.append(job("scale", scenario_scale, workdir, db, token, rate))
    if "idle" in only:
        jobs.append(job("idle", scenario_idle_race, workdir, db, token))
    if "pipelining" in only or "reloads" in only:
        for t in jobs[:1]:  # after the rolling restart's latencies are measured
            t.join()
        jobs.append(job("pipelining", scenario_pipelining, workdir, db, token))
    if "reloads" in only:
        jobs.append(job("reloads", scenario_nginx_reloads, workdir, db, token, rate))
    for t in jobs:
        t.join()
    if errors:
        raise errors[0]
    if own_dir:
        shutil.rmtree(workdir, ignore_errors=True)
    return [r for name in ("rolling", "reloads", "scale", "idle", "pipelining") for r in results.get(name, [])]
