#!/usr/bin/env python3
"""Capella's connection string, one DNS name, on CAVES: the driver of test_dns_srv.py.

    python tests/dns_srv.py    (as testkit.netns.run runs it: root, unshare -n -m,
                                /etc/resolv.conf naming testkit.dns's dnsmasq alone)

dnsmasq serves ``test.local``: ``_couchbases._tcp.cb.test.local`` (and ``_couchbase._tcp``)
names the nodes ``n0``/``n1.cb.test.local`` of CAVES cluster A, behind tests/terminator.py's TLS
terminator with a certificate for those names and ``m0``/``m1``, the nodes of cluster B, loaded
with the same data; ``_couchbases._tcp.evil.test.local`` names ``e0.evil.test.local``, which
the certificate does not name. Every name is 127.0.0.1; CAVES's configuration names no host, so
the SDK calls every node by the name it bootstrapped from, and the ports tell them apart.

It runs the real service through these scenarios and prints one JSON report:
``plain`` (A's nodes listed, the reference), ``srv_tls`` and ``srv_plain`` (the SRV name over
couchbases:// and couchbase://), ``no_srv`` (a name with no SRV record), ``wrong_name``,
``dns_down`` (DNS dropped at start-up, then back),
``moved`` (under load: the SRV records now name B's nodes, then every node of A lost) and
``lost_then_renamed`` (every node of A lost, the records naming B's, whose certificate first
names another host, then the right one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from node_loss import Firewall, Load  # beside this file
from terminator import Pki, Terminator, kv_ports

from testkit import ServiceProcess, run_loaddata, wait_until
from testkit.caves import BUCKET, Caves
from testkit.dns import ADDRESS, Dnsmasq

TOKEN = "dns-srv-token-3b7c52"
COUNT = 100
NAME, EVIL = "cb.test.local", "evil.test.local"
CONNECT_TIMEOUT = 5
PATHS = [f"/api/v1/{route}/{n}" for n in range(1, COUNT + 2) for route in ("id", "picture/record", "picture/raw")]


def records(tls: list[int], plain: list[int], names: tuple[str, str], evil_port: int) -> dict:
    """The SRV records: NAME's over TLS and plain, naming ``names`` on these ports; EVIL's."""
    return {
        f"_couchbases._tcp.{NAME}": [(f"{host}.{NAME}", port) for host, port in zip(names, tls, strict=True)],
        f"_couchbase._tcp.{NAME}": [(f"{host}.{NAME}", port) for host, port in zip(names, plain, strict=True)],
        f"_couchbases._tcp.{EVIL}": [(f"e0.{EVIL}", evil_port)],
    }


HOSTS = {f"{host}.{NAME}": "127.0.0.1" for host in ("n0", "n1", "m0", "m1")} | {f"e0.{EVIL}": "127.0.0.1"}


class Run:
    """The service under test, started on ``env``; its log's store lines when it stops."""

    def __init__(self, work: Path, name: str, env: dict):
        self.name = name
        self.service = ServiceProcess(
            {**env, "ACCESS_LOG": "false", "COUCHBASE_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT)},
            log_path=work / f"{name}.log",
        ).start()
        self.started = time.monotonic()

    def ready_within(self, seconds: float) -> float | None:
        ready = wait_until(lambda: self.service.get("/readyz")[0] == 200, seconds, 0.1)
        return round(time.monotonic() - self.started, 2) if ready else None

    def readyz(self) -> tuple[int, str]:
        status, _, body = self.service.get("/readyz")
        return status, json.loads(body).get("message", {}).get("error", "")

    def bodies(self) -> dict:
        return {path: list(self.service.get(path, TOKEN)[::2]) for path in PATHS}

    def finish(self, found: dict) -> dict:
        self.service.stop()
        log = self.service.log()
        found["log"] = [line for line in log.splitlines() if "couchbase:" in line or "token:" in line][:60]
        found["tracebacks"] = log.count("Traceback")
        return found


def statuses(run: Run, ids: range) -> dict[str, int]:
    """Each id asked once: how many answers of each status."""
    found: dict[str, int] = {}
    for n in ids:
        status = str(run.service.get(f"/api/v1/id/{n}", TOKEN)[0])
        found[status] = found.get(status, 0) + 1
    return found


def answers(load: Load, since: float, until: float) -> dict:
    mine = [a for client in load.answers for a in client if since <= a[0] < until]
    statuses: dict[str, int] = {}
    for _, status, _ in mine:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return statuses


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("dns_srv.py: needs root, in a network and mount namespace of its own (testkit.netns)")
    work = Path(tempfile.mkdtemp(prefix="dns-srv-"))
    pki = Pki(work)
    names = ",".join(f"DNS:{host}.{NAME}" for host in ("n0", "n1", "m0", "m1"))
    named, misnamed = pki.certificate("named", names), pki.wrong_name
    report: dict = {}
    a, b = Caves(log_path=work / "caves-a.log").start(), Caves(log_path=work / "caves-b.log").start()
    dns = Dnsmasq(work, "test.local")
    terminators: list[Terminator] = []
    firewalls: list[Firewall] = []
    try:
        for cluster in (a, b):
            cluster.add_bucket(replicas=1)
            try:
                run_loaddata(cluster.env(), "--count", str(COUNT), "--token", TOKEN)
            except subprocess.CalledProcessError as exc:
                raise RuntimeError(f"loaddata.py failed: {exc.stdout}{exc.stderr}") from exc
        ports_a, ports_b = kv_ports(a.connstr, BUCKET), kv_ports(b.connstr, BUCKET)
        for n, (ports, certificate) in enumerate(((ports_a, named), (ports_b, misnamed))):
            (work / f"term-{n}").mkdir()
            terminators.append(Terminator(work / f"term-{n}", ports, [certificate] * len(ports)).start())
        tls_a, plain_a = [t for _, t in ports_a], [p for p, _ in ports_a]
        tls_b, plain_b = [t for _, t in ports_b], [p for p, _ in ports_b]
        on_a = records(tls_a, plain_a, ("n0", "n1"), tls_a[0])
        on_b = records(tls_b, plain_b, ("m0", "m1"), tls_a[0])
        dns.serve(on_a, HOSTS)
        tls_env = {**a.env(), "COUCHBASE_CA_CERT": str(pki.ca)}

        plain = Run(work, "plain", a.env())
        plain_found = {"ready_after_s": plain.ready_within(20)}
        reference = plain.bodies()
        report["plain"] = plain.finish(plain_found)

        for scenario, host in (
            ("srv_tls", f"couchbases://{NAME}"),
            ("srv_plain", f"couchbase://{NAME}"),
            ("no_srv", f"couchbases://n0.{NAME}:{tls_a[0]}"),
        ):
            run = Run(work, scenario, {**tls_env, "COUCHBASE_HOST": host})
            found: dict = {"ready_after_s": run.ready_within(20)}
            if found["ready_after_s"] is not None:
                found["equal_plain"] = run.bodies() == reference
            report[scenario] = run.finish(found)

        run = Run(work, "wrong_name", {**tls_env, "COUCHBASE_HOST": f"couchbases://{EVIL}"})
        found = {"ready_after_s": run.ready_within(CONNECT_TIMEOUT + 5)}
        found["readyz"] = run.readyz()
        found["api"] = run.service.get("/api/v1/id/1", TOKEN)[0]
        report["wrong_name"] = run.finish(found)

        # DNS not answering at start-up: its packets dropped, then let through.
        drops = [["INPUT", "-p", protocol, "-d", ADDRESS, "--dport", "53", "-j", "DROP"] for protocol in ("udp", "tcp")]
        for rule in drops:
            subprocess.run(["iptables", "-A", *rule], check=True)
        try:
            run = Run(work, "dns_down", {**tls_env, "COUCHBASE_HOST": f"couchbases://{NAME}"})
            time.sleep(4)
            found = {"readyz_while_down": run.readyz()}
        finally:
            for rule in drops:
                subprocess.run(["iptables", "-D", *rule], check=True)
        back = time.monotonic()
        found["ready_after_dns_back_s"] = (
            round(time.monotonic() - back, 2) if wait_until(lambda: run.readyz()[0] == 200, 20, 0.1) else None
        )
        report["dns_down"] = run.finish(found)

        # Under load: the records now name B's nodes (A still up), then every node of A is lost.
        terminators[1].swap([named] * len(ports_b))
        run = Run(work, "moved", {**tls_env, "COUCHBASE_HOST": f"couchbases://{NAME}"})
        found = {"ready_after_s": run.ready_within(20)}
        load = Load(run.service.port, 8, TOKEN, COUNT).start()
        marks = [time.monotonic()]
        time.sleep(3)
        dns.serve(on_b, HOSTS)
        marks.append(time.monotonic())
        found["reconnected"] = bool(
            wait_until(lambda: "reconnected" in run.service.log().split("now names", 1)[-1], 20, 0.2)
        )
        time.sleep(2)
        lost = [Firewall(front) for front in terminators[0].fronts]
        firewalls += lost
        for firewall in lost:
            firewall.set("REJECT", "--reject-with", "tcp-reset")
        marks.append(time.monotonic())
        time.sleep(5)
        marks.append(time.monotonic())
        load.finish()
        found["answers"] = {
            phase: answers(load, since, until)
            for phase, since, until in zip(("on_a", "dns_changed", "a_lost"), marks, marks[1:], strict=False)
        }
        found["bodies_equal_plain"] = run.bodies() == reference
        report["moved"] = run.finish(found)

        # Every node of A lost first; the records then name B's, behind a certificate for another
        # name: refused, and named; then the right certificate: ready through B.
        for firewall in lost:
            firewall.clear()
        dns.serve(on_a, HOSTS)
        run = Run(work, "lost_then_renamed", {**tls_env, "COUCHBASE_HOST": f"couchbases://{NAME}"})
        found = {"ready_after_s": run.ready_within(20)}
        terminators[1].swap([misnamed] * len(ports_b))
        for firewall in lost:
            firewall.set("REJECT", "--reject-with", "tcp-reset")
        dns.serve(on_b, HOSTS)
        found["refused"] = bool(wait_until(lambda: "mismatch" in run.readyz()[1], 20, 0.2))
        found["readyz_refused"] = run.readyz()
        terminators[1].swap([named] * len(ports_b))
        swapped = time.monotonic()
        ready = wait_until(lambda: run.readyz()[0] == 200, 30, 0.1)
        found["ready_after_right_certificate_s"] = round(time.monotonic() - swapped, 2) if ready else None
        found["after"] = statuses(run, range(1, COUNT + 1))
        time.sleep(2)  # the SDK's own connection may still be moving (it asks DNS itself once every node failed)
        found["settled"] = statuses(run, range(1, COUNT + 1))
        report["lost_then_renamed"] = run.finish(found)
        report["dns_queries"] = dns.log().count("query[SRV]")
    finally:
        for firewall in firewalls:
            firewall.clear()
        for terminator in terminators:
            terminator.stop()
        dns.stop()
        a.stop()
        b.stop()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
