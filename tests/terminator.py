"""TLS in front of CAVES, whose own TLS listeners serve no usable certificate (its embedded one
expired in 2018): test_tls.py's and node_loss.py's ``--tls``.

In a network namespace of its own (``unshare -n``, as root), ``Pki`` makes a CA and server
certificates with openssl (SAN ``IP:127.0.0.1,DNS:localhost``; one for another name; a
second CA), ``Terminator`` runs haproxy in TCP mode with ``bind ... ssl crt`` on a port per
node, forwarding to that node's plain key-value port, and iptables' nat table sends what
the SDK sends to each node's TLS key-value port (``kvSSL`` in the bucket's configuration)
to that node's terminator. The SDK, the service and the service's own checks then talk TLS
to ``couchbases://127.0.0.1:<kvSSL>,...`` as to a secured cluster.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import time
from pathlib import Path

from testkit import free_port
from testkit.caves import BUCKET, PASSWORD, USER
from testkit.pki import certificate_authority, issue

WRONG_NAME = "not-this-host.example"


class Pki:
    """``ca.pem``; ``server.pem`` (certificate and key) for 127.0.0.1 and localhost, signed by it;
    ``wrong-name.pem`` for another name, signed by it; ``other-ca.pem``, another CA; and more
    certificates of that CA for other names (``certificate``)."""

    def __init__(self, work: Path):
        self.dir = work
        for ca in ("ca", "other-ca"):
            certificate_authority(work, ca, f"/CN=test {ca}")
        self.ca, self.other_ca = work / "ca.pem", work / "other-ca.pem"
        self.server = self.certificate("server", "IP:127.0.0.1,DNS:localhost")
        self.wrong_name = self.certificate("wrong-name", f"DNS:{WRONG_NAME}")

    def certificate(self, name: str, san: str) -> Path:
        """``<name>.pem``, a certificate and its key for the subjectAltName ``san``, signed by the CA."""
        work = self.dir
        issue(work, name, f"/CN={san.split(':')[1].split(',')[0]}", f"subjectAltName={san}", "ca.pem", "ca.key")
        (work / f"{name}.pem").write_text((work / f"{name}.crt").read_text() + (work / f"{name}.key").read_text())
        return work / f"{name}.pem"


def _call(sock: socket.socket, opcode: int, key: bytes = b"", value: bytes = b"") -> bytes:
    sock.sendall(struct.pack(">BBHBBHIIQ", 0x80, opcode, len(key), 0, 0, 0, len(key) + len(value), 0, 0) + key + value)
    header = b""
    while len(header) < 24:
        header += sock.recv(24 - len(header))
    _, _, key_len, extras_len, _, status, body_len, _, _ = struct.unpack(">BBHBBHIIQ", header)
    body = b""
    while len(body) < body_len:
        body += sock.recv(body_len - len(body))
    assert status == 0, f"opcode 0x{opcode:x}: status 0x{status:x} {body!r}"
    return body[extras_len + key_len :]


def kv_ports(connstr: str, bucket: str) -> list[tuple[int, int]]:
    """(plain, TLS) key-value port of each node, in the connection string's order, from the
    bucket's configuration read on the first node's plain port."""
    plain = [int(node.rsplit(":", 1)[1]) for node in connstr.split("://", 1)[1].split(",")]
    with socket.create_connection(("127.0.0.1", plain[0]), 10) as sock:
        _call(sock, 0x21, b"PLAIN", f"\0{USER}\0{PASSWORD}".encode())  # SASL_AUTH
        _call(sock, 0x89, bucket.encode())  # SELECT_BUCKET
        config = json.loads(_call(sock, 0xB5))  # GET_CLUSTER_CONFIG
    tls = {node["services"]["kv"]: node["services"]["kvSSL"] for node in config["nodesExt"]}
    return [(port, tls[port]) for port in plain]


class Terminator:
    """haproxy terminating TLS for each node, the nat rules sending each kvSSL port to it."""

    def __init__(self, work: Path, ports: list[tuple[int, int]], certificates: list[Path]):
        self.work, self.ports = work, ports
        self.fronts = [free_port() for _ in ports]
        self.certificates = certificates
        self.proc: subprocess.Popen | None = None
        self.rules: list[list[str]] = []

    @property
    def connstr(self) -> str:
        return "couchbases://" + ",".join(f"127.0.0.1:{tls}" for _, tls in self.ports)

    def start(self) -> Terminator:
        self._haproxy()
        for (_, tls), front in zip(self.ports, self.fronts, strict=True):
            rule = [
                "OUTPUT",
                "-p",
                "tcp",
                "-d",
                "127.0.0.1",
                "--dport",
                str(tls),
                "-j",
                "DNAT",
                "--to-destination",
                f"127.0.0.1:{front}",
            ]
            subprocess.run(["iptables", "-t", "nat", "-A", *rule], check=True)
            self.rules.append(rule)
        return self

    def swap(self, certificates: list[Path]) -> None:
        """haproxy again with other certificates: every TLS connection is closed, and made anew."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)
        self.certificates = certificates
        self._haproxy()

    def _haproxy(self) -> None:
        lines = [
            "global",
            "  maxconn 2000",
            "defaults",
            "  mode tcp",
            "  timeout connect 5s",
            "  timeout client 1h",
            "  timeout server 1h",
        ]
        for n, ((plain, _), front, cert) in enumerate(zip(self.ports, self.fronts, self.certificates, strict=True)):
            lines += [
                f"frontend node{n}",
                f"  bind 127.0.0.1:{front} ssl crt {cert}",
                f"  default_backend node{n}",
                f"backend node{n}",
                f"  server node{n} 127.0.0.1:{plain}",
            ]
        config = self.work / "haproxy.cfg"
        config.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(config)],
            stdout=open(self.work / "haproxy.log", "ab"),  # noqa: SIM115  # haproxy keeps it
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        for front in self.fronts:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", front), 1).close()
                    break
                except OSError as exc:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        log = (self.work / "haproxy.log").read_text()
                        raise RuntimeError(f"haproxy did not listen: {log}") from exc
                    time.sleep(0.05)

    def stop(self) -> None:
        for rule in self.rules:
            subprocess.run(["iptables", "-t", "nat", "-D", *rule], check=False)
        self.rules = []
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def __enter__(self) -> Terminator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the driver of test_tls.py: python tests/terminator.py, in unshare -n, as root ------------
CHANGED_SDK = '''\
"""A changed SDK for the service under test: its C++ get no longer takes the request type that
couchbase.logic.pycbc_core.pycbc_kv_request names. The SDK's own modules are imported first, so
that its public calls keep the real type; from the moment the file TRIGGER exists the service's
shortcut (cbsdk) gets the other one, as a new SDK release could lay it out."""
import os, sys, threading, time
import couchbase.cluster, couchbase.collection  # noqa: E401,F401  # the public path, bound now
import couchbase.logic.pycbc_core as core

class ChangedRequest:  # the attributes the old one had, but not the type the C++ get wants
    pass

def change():
    while not os.path.exists(os.environ["CHANGED_SDK_TRIGGER"]):
        time.sleep(0.05)
    core.pycbc_kv_request = ChangedRequest
    if "cbsdk" in sys.modules:
        sys.modules["cbsdk"].pycbc_kv_request = ChangedRequest

threading.Thread(target=change, daemon=True).start()
'''


def cpu_seconds(pid: int) -> float:
    """A process's user and system CPU, every thread's (the SDK's I/O threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ab(services: dict, token: str, count: int, rounds: int, seconds: float) -> dict:
    """The service's CPU per request over plain and over TLS, the two measured in turn in each
    round (which first alternating), wrk asking random ids on 16 connections."""
    lua = Path(__file__).resolve().parent.parent / "bench" / "random_id.lua"
    found: dict = {name: [] for name in services}
    for n in range(rounds):
        for name in list(services) if n % 2 == 0 else list(services)[::-1]:
            service = services[name]
            before = cpu_seconds(service.proc.pid)
            out = subprocess.run(
                [
                    "wrk",
                    "-t1",
                    "-c16",
                    f"-d{seconds:g}s",
                    "-s",
                    str(lua),
                    f"http://127.0.0.1:{service.port}",
                    "--",
                    token,
                    str(count),
                ],
                capture_output=True,
                text=True,
                timeout=seconds + 60,
                check=True,
            ).stdout
            used = cpu_seconds(service.proc.pid) - before
            raw = json.loads([line for line in out.splitlines() if line.startswith("JSON ")][-1][5:])
            assert raw["status"] == 0 and raw["requests"] > 0, out
            found[name].append(
                {
                    "requests": raw["requests"],
                    "us_per_request": round(used / raw["requests"] * 1e6, 1),
                    "p99_ms": raw["p99_us"] / 1000,
                }
            )
    plain, tls = found["plain"], found["tls"]
    ratios = sorted(t["us_per_request"] / p["us_per_request"] for p, t in zip(plain, tls, strict=True))
    found["tls_over_plain"] = {
        "median": round(ratios[len(ratios) // 2], 3),
        "range": [round(ratios[0], 3), round(ratios[-1], 3)],
    }
    return found


def sdk_alone_reads(connstr: str, ca: Path) -> bool:
    """Whether the SDK by itself, trusting ``ca`` alone, reads a document through a node whose
    certificate names another host: why the service checks names itself (4.6.3 does)."""
    from datetime import timedelta

    from couchbase.auth import PasswordAuthenticator
    from couchbase.cluster import Cluster
    from couchbase.options import ClusterOptions, ClusterTimeoutOptions

    try:
        cluster = Cluster(
            connstr,
            ClusterOptions(
                PasswordAuthenticator(USER, PASSWORD),
                trust_store_path=str(ca),
                timeout_options=ClusterTimeoutOptions(bootstrap_timeout=timedelta(seconds=10)),
            ),
        )
    except Exception:  # refused: what a newer SDK would do
        return False
    try:
        collection = cluster.bucket(BUCKET).scope("profiles").collection("service_auth")
        return all(collection.get_any_replica("service_auth:1").value is not None for _ in range(5))
    except Exception:
        return False
    finally:
        cluster.close()


def returns_renamed(env: dict, term: Terminator, pki: Pki, token: str, work: Path) -> dict:
    """The second node lost (its key-value port frozen), then back with a certificate for another
    name: seconds from its return until lookups are refused, and what they answer after."""
    from testkit import ServiceProcess

    service = ServiceProcess({**env, "ACCESS_LOG": "false"}, log_path=work / "returns-renamed.log")
    service.start(wait_for="/readyz")
    freeze = ["INPUT", "-p", "tcp", "--dport", str(term.ports[1][0]), "-j", "DROP"]
    found: dict = {"before": service.get("/api/v1/id/1", token)[0]}
    try:
        subprocess.run(["iptables", "-A", *freeze], check=True)
        deadline = time.monotonic() + 15
        while " lost (" not in service.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        term.swap([pki.server, pki.wrong_name])
        subprocess.run(["iptables", "-D", *freeze], check=True)
        back = time.monotonic()
        while service.get("/readyz")[0] == 200 and time.monotonic() - back < 60:
            time.sleep(0.05)
        found["refused_after_s"] = round(time.monotonic() - back, 2)
        found["after"] = sorted({service.get(f"/api/v1/id/{n}", token)[0] for n in range(1, 21)})
    finally:
        subprocess.run(["iptables", "-D", *freeze], check=False, capture_output=True)
        service.stop()
    found["log"] = [line for line in service.log().splitlines() if "couchbase:" in line][:20]
    found["tracebacks"] = service.log().count("Traceback")
    return found


def main() -> None:
    import argparse
    import sys
    import tempfile

    from testkit import ServiceProcess, run_loaddata
    from testkit.caves import Caves

    p = argparse.ArgumentParser(description="TLS through a terminator: prints one JSON report")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--connect-timeout", type=float, default=10)
    p.add_argument(
        "--ab",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="instead of the scenarios: CPU per request over TLS against plain, ROUNDS rounds",
    )
    p.add_argument("--ab-seconds", type=float, default=5)
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("terminator.py: needs root (iptables), in a network namespace of its own (unshare -n)")
    token = "tls-token-4e1b9d"
    work = Path(tempfile.mkdtemp(prefix="tls-"))
    pki = Pki(work)
    report: dict = {}
    with Caves(log_path=work / "caves.log") as caves:
        caves.add_bucket(replicas=1)
        ports = kv_ports(caves.connstr, BUCKET)
        plain_env = caves.env(COUCHBASE_CONNECT_TIMEOUT=str(args.connect_timeout))
        run_loaddata(plain_env, "--count", str(args.count), "--token", token)
        paths = [
            f"/api/v1/{route}/{n}"
            for n in range(1, args.count + 2)
            for route in ("id", "picture/record", "picture/raw")
        ]

        def answers(env: dict, name: str, changed: Path | None = None) -> dict:
            """Ready or not within the connect timeout plus 5 s, the answers to every path when
            ready, and the store's log lines."""
            log = work / f"{name}.log"
            service = ServiceProcess({**env, "ACCESS_LOG": "false"}, log_path=log).start()
            started = time.monotonic()
            found: dict = {"ready_after_s": None, "readyz_slowest_s": 0.0}
            try:
                while time.monotonic() - started < args.connect_timeout + 5:
                    asked = time.monotonic()
                    status = service.get("/readyz")[0]
                    found["readyz_slowest_s"] = max(found["readyz_slowest_s"], round(time.monotonic() - asked, 3))
                    if status == 200:
                        found["ready_after_s"] = round(time.monotonic() - started, 2)
                        break
                    time.sleep(0.1)
                if changed is not None and found["ready_after_s"] is not None:
                    changed.touch()
                    time.sleep(0.5)
                    found["changed"] = [service.get(f"/api/v1/id/{n}", token)[0] for n in range(1, 51)]
                if found["ready_after_s"] is not None:
                    found["bodies"] = {path: list(service.get(path, token)[::2]) for path in paths}
            finally:
                service.stop()
            lines = [line for line in service.log().splitlines() if "couchbase:" in line]
            found["log"] = lines[:20]
            found["tracebacks"] = service.log().count("Traceback")
            return found

        if args.ab:
            with Terminator(work, ports, [pki.server, pki.server]) as term:
                tls_env = {
                    **plain_env,
                    "COUCHBASE_HOST": term.connstr,
                    "COUCHBASE_CA_CERT": str(pki.ca),
                    "ACCESS_LOG": "false",
                }
                services = {
                    "plain": ServiceProcess(
                        {**plain_env, "ACCESS_LOG": "false"}, "--no-access-log", log_path=work / "ab-plain.log"
                    ),
                    "tls": ServiceProcess(tls_env, "--no-access-log", log_path=work / "ab-tls.log"),
                }
                try:
                    for service in services.values():
                        service.start(wait_for="/readyz")
                    print(json.dumps(cpu_ab(services, token, args.count, args.ab, args.ab_seconds), indent=1))
                finally:
                    for service in services.values():
                        service.stop()
            return
        plain = answers(plain_env, "plain")
        tls_env = {**plain_env, "COUCHBASE_CA_CERT": str(pki.ca)}
        with Terminator(work, ports, [pki.server, pki.server]) as term:
            tls_env["COUCHBASE_HOST"] = term.connstr
            right = answers(tls_env, "right-ca")
            report["wrong_ca"] = answers({**tls_env, "COUCHBASE_CA_CERT": str(pki.other_ca)}, "wrong-ca")
            report["no_ca"] = answers({**tls_env, "COUCHBASE_CA_CERT": ""}, "no-ca")
            report["missing_ca"] = answers({**tls_env, "COUCHBASE_CA_CERT": str(work / "missing.pem")}, "missing-ca")
            trigger = work / "change-now"
            (work / "changed").mkdir()
            (work / "changed" / "sitecustomize.py").write_text(CHANGED_SDK)
            report["changed_sdk"] = answers(
                {**tls_env, "PYTHONPATH": str(work / "changed"), "CHANGED_SDK_TRIGGER": str(trigger)},
                "changed",
                trigger,
            )
        with Terminator(work, ports, [pki.server, pki.wrong_name]) as term:
            report["wrong_name"] = answers({**tls_env, "COUCHBASE_HOST": term.connstr}, "wrong-name")
            report["sdk_alone_reads_from_a_wrong_name"] = sdk_alone_reads(term.connstr, pki.ca)
        with Terminator(work, ports, [pki.server, pki.server]) as term:
            report["returns_renamed"] = returns_renamed(
                {**tls_env, "COUCHBASE_HOST": term.connstr}, term, pki, token, work
            )
        report["plain_ready_after_s"], report["tls_ready_after_s"] = plain["ready_after_s"], right["ready_after_s"]
        report["tls_log"] = right["log"]
        report["paths"] = len(paths)
        report["tls_equal_plain"] = right.get("bodies") == plain.get("bodies") and bool(plain.get("bodies"))
        report["plain_statuses"] = sorted({str(b[0]) for b in plain.get("bodies", {}).values()})
        report["tls_statuses"] = sorted({str(b[0]) for b in right.get("bodies", {}).values()})
        for scenario in report.values():
            if isinstance(scenario, dict):
                scenario.pop("bodies", None)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
