#!/usr/bin/env python3
"""One of two Couchbase nodes frozen, then killed, under load: the driver of test_node_loss.py.

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python tests/node_loss.py'

It must run in a network namespace of its own, as root: it firewalls a port of
CAVES with iptables, and only there does that touch nothing else. It starts
CAVES (a 2-node cluster; the bucket keeps 1 replica), loads it with
loaddata.py, starts the service, and runs keep-alive load (``--connections``
clients asking random ids) through these phases, each ``--phase`` seconds:
healthy; the second node frozen (iptables DROP on its key-value port); back;
killed (REJECT with a TCP reset); back. Then start-up with that node frozen:
how long until /readyz answers 200, and whether every id then answers 200.
It prints one JSON object: for each phase the answers, their rate, the
non-200 answers by status, p99 latency, the replica reads (/metrics) and, after
a node's return, how long until the replica reads stopped.

``--root DIR`` runs the service of another checkout (an earlier commit unpacked
there) on the same cluster, for a before/after table (docs/decisions/2026-12-01-replica-reads.md).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from terminator import Pki, Terminator, kv_ports  # beside this file

from testkit import ROOT, ServiceProcess, run_loaddata, scrape
from testkit.caves import BUCKET, Caves

TOKEN = "node-loss-token-8d2f61"
COUNT = 1000
STARTUP_IDS = 200  # asked after each of the repeated start-ups
KV_TIMEOUT = 2.5  # the service's default, as in the figures


class Service(ServiceProcess):
    """The service of the checkout under test (--root), launched at once: ready_within times its start."""

    def __init__(self, root: Path, env: dict, log_path: Path):
        super().__init__({**env, "ACCESS_LOG": "false"}, log_path=log_path, root=root)
        self.launch()

    def ready_within(self, limit: float) -> float | None:
        """Seconds until /readyz answered 200, or None."""
        started = time.monotonic()
        while time.monotonic() - started < limit:
            try:
                if self.get("/readyz", timeout=1)[0] == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.05)
        return None

    def replica_reads(self) -> int | None:
        try:
            text = self.get("/metrics", timeout=2)[2].decode()
        except OSError:
            return None
        counted = [value for name, _, value in scrape.samples(text) if name == "userprofile_store_replica_reads_total"]
        return int(counted[0]) if counted else None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        return super().stop(sig, timeout)


class Firewall:
    """iptables rules on one port, in this namespace; each one removed by ``clear``."""

    def __init__(self, port: int):
        self.port = port
        self.rule: list[str] | None = None

    def set(self, *target: str) -> None:
        self.clear()
        self.rule = ["INPUT", "-p", "tcp", "--dport", str(self.port), "-j", *target]
        subprocess.run(["iptables", "-A", *self.rule], check=True)

    def clear(self) -> None:
        if self.rule:
            subprocess.run(["iptables", "-D", *self.rule], check=True)
            self.rule = None


class Load:
    """Keep-alive clients asking random ids until stopped; each answer kept as
    (time it ended, status, seconds)."""

    def __init__(self, port: int, connections: int, token: str = TOKEN, count: int = COUNT):
        self.port, self.stop, self.token, self.count = port, threading.Event(), token, count
        self.answers: list[list] = [[] for _ in range(connections)]
        self.threads = [threading.Thread(target=self._client, args=(mine,), daemon=True) for mine in self.answers]

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def _client(self, answers: list) -> None:
        conn: http.client.HTTPConnection | None = None
        rng = random.Random()  # load, not secrets
        headers = {"Authorization": f"Bearer {self.token}"}
        while not self.stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            started = time.monotonic()
            try:
                conn.request("GET", f"/api/v1/id/{rng.randint(1, self.count)}", headers=headers)
                resp = conn.getresponse()
                resp.read()
                status, closing = resp.status, resp.will_close
            except (OSError, http.client.HTTPException):
                status, closing = 0, True  # no answer at all
            if closing:
                conn.close()
                conn = None
            ended = time.monotonic()
            answers.append((ended, status, ended - started))
        if conn is not None:
            conn.close()

    def finish(self) -> list:
        self.stop.set()
        for t in self.threads:
            t.join(15)
        return sorted(a for mine in self.answers for a in mine)


def summary(answers: list, start: float, end: float, reads: list, returned: bool) -> dict:
    """One phase: its answers, and the replica reads counted (/metrics) within it."""
    mine = [a for a in answers if start <= a[0] < end]
    latencies = sorted(a[2] for a in mine)
    non_200: dict[str, int] = {}
    for _, status, _ in mine:
        if status != 200:
            non_200[str(status)] = non_200.get(str(status), 0) + 1
    before = [n for t, n in reads if t < start]
    count = before[-1] if before else 0
    total, last_rise, late = 0, 0.0, 0
    for t, n in reads:
        if start <= t < end and n > count:
            total, last_rise, late = total + n - count, t - start, late + (n - count if t >= start + 5 else 0)
            count = n
    result = {
        "seconds": round(end - start, 1),
        "answers": len(mine),
        "per_second": round(len(mine) / (end - start)),
        "non_200": non_200,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1) if latencies else None,
        "replica_reads": total if reads else None,  # None: the service counts none (an earlier one)
    }
    if returned:  # the last replica reads, seconds after the node's return (to the poll's 0.25 s)
        result["replica_reads_stopped_after_s"] = round(last_rise, 2)
        result["replica_reads_after_5_s"] = late
        result["answers_after_5_s"] = sum(1 for a in mine if a[0] >= start + 5)
    return result


def wall(monotonic: float) -> str:
    """A monotonic instant as the service's log stamps it."""
    then = datetime.now(UTC) - timedelta(seconds=time.monotonic() - monotonic)
    return then.isoformat(timespec="milliseconds")


def startup(root: Path, env: dict, work: Path, firewall: Firewall, limit: float, ids: int) -> dict:
    """Start-up with the firewalled node frozen: seconds until ready, then ids 1..ids asked once each."""
    firewall.set("DROP")
    service = Service(root, env, work / "service-startup.log")
    try:
        ready = service.ready_within(limit)
        statuses: dict[str, int] = {}
        started = time.monotonic()
        if ready is not None:
            for record_id in range(1, ids + 1):
                try:
                    status = service.get(f"/api/v1/id/{record_id}", TOKEN)[0]
                except OSError:
                    status = 0
                statuses[str(status)] = statuses.get(str(status), 0) + 1
        return {
            "ready_after_s": round(ready, 2) if ready is not None else None,
            "ids": ids,
            "statuses": statuses,
            "every_id_seconds": round(time.monotonic() - started, 1),
        }
    finally:
        service.stop()
        firewall.clear()


def phases(service: Service, firewall: Firewall, seconds: float, connections: int) -> dict:
    """The load through the phases: healthy, frozen, back, dead, back."""
    load = Load(service.port, connections).start()
    reads: list[tuple[float, int]] = []
    polling = threading.Event()

    def poll() -> None:
        while not polling.wait(0.25):
            n = service.replica_reads()
            if n is not None:
                reads.append((time.monotonic(), n))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    marks = []
    for name, action in (
        ("healthy", firewall.clear),
        ("frozen", lambda: firewall.set("DROP")),
        ("back_after_frozen", firewall.clear),
        ("dead", lambda: firewall.set("REJECT", "--reject-with", "tcp-reset")),
        ("back_after_dead", firewall.clear),
    ):
        action()
        marks.append((name, time.monotonic()))
        time.sleep(seconds)
    marks.append(("end", time.monotonic()))
    answers = load.finish()
    polling.set()
    poller.join(5)
    found = {}
    for (name, start), (_, end) in itertools.pairwise(marks):
        found[name] = summary(answers, start, end, reads, name.startswith("back"))
        found[name]["began"] = wall(start)
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phase", type=float, default=10, help="seconds of each phase (default 10; 0: no phases)")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--root", type=Path, default=ROOT, help="the checkout whose service runs (default this one)")
    p.add_argument("--startup-limit", type=float, default=20, help="seconds start-up may take (default 20)")
    p.add_argument(
        "--startup-runs",
        type=int,
        default=0,
        help="then start-ups with the first node frozen, and with the second, this many times each "
        f"({STARTUP_IDS} ids asked after each)",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="over TLS: couchbases:// through a terminator (tests/terminator.py); the firewall then "
        "freezes the node behind it",
    )
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("node_loss.py: needs root (iptables), in a network namespace of its own (unshare -n)")
    work = Path(tempfile.mkdtemp(prefix="node-loss-"))
    caves = Caves(log_path=work / "caves.log").start()
    service = None
    firewalls: list[Firewall] = []
    terminator = None
    report: dict = {"root": str(args.root), "phases": {}, "second_node": ""}
    try:
        caves.add_bucket(replicas=1)
        # The connection string lists each node's key-value port: the second node's is last.
        nodes = caves.connstr.split("://", 1)[1].split(",")
        report["second_node"] = nodes[1]
        firewalls = [Firewall(int(node.rsplit(":", 1)[1])) for node in nodes]
        env = caves.env(COUCHBASE_KV_TIMEOUT=str(KV_TIMEOUT))
        try:
            run_loaddata(env, "--count", str(COUNT), "--token", TOKEN)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"loaddata.py failed: {exc.stdout}{exc.stderr}") from exc
        if args.tls:
            ports = kv_ports(caves.connstr, BUCKET)
            pki = Pki(work)
            terminator = Terminator(work, ports, [pki.server] * len(ports)).start()
            env = {**env, "COUCHBASE_HOST": terminator.connstr, "COUCHBASE_CA_CERT": str(pki.ca)}
            report["second_node"] = f"127.0.0.1:{ports[1][1]}"  # as the SDK names it: its TLS port
        if args.phase > 0:
            service = Service(args.root, env, work / "service.log")
            if service.ready_within(30) is None:
                raise RuntimeError("the service did not become ready with every node up")
            report["phases"] = phases(service, firewalls[1], args.phase, args.connections)
            service.stop()
            service = None
            report["startup_frozen"] = startup(args.root, env, work, firewalls[1], args.startup_limit, COUNT)
        if args.startup_runs:
            report["startup_runs"] = {
                which: [
                    startup(args.root, env, work, firewall, args.startup_limit, STARTUP_IDS)
                    for _ in range(args.startup_runs)
                ]
                for which, firewall in zip(("first", "second"), firewalls, strict=True)
            }
    finally:
        if service is not None:
            service.stop()
        for firewall in firewalls:
            firewall.clear()
        if terminator is not None:
            terminator.stop()
        caves.stop()
    for name in ("service", "service-startup"):
        path = work / f"{name}.log"
        log = path.read_text(errors="replace") if path.exists() else ""
        report[f"{name}_log"] = [line for line in log.splitlines() if "couchbase:" in line][:40]
        report[f"{name}_tracebacks"] = log.count("Traceback")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
