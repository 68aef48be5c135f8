"""CAVES as the cluster's Couchbase: on the node, loaded by loaddata.py, reached through a Service;
Couchbase's SQL++ engine beside it (testkit.caves.QueryEngine, on the node's loopback), so the pods'
nickname and username lookups are answered as on a cluster.

The pods reach it as a user's pods reach a Couchbase cluster outside Kubernetes: the Service
`couchbase` has no selector, a fixed ClusterIP (this cluster runs no DNS) and an EndpointSlice that
names the node's address. CAVES picks its ports when it starts and its cluster map lists each
service by port with no host (the SDK then uses the address it bootstrapped from), so the Service
carries every port CAVES listens on, plus 11210 for the bootstrap.

    python3 -m tools.k8s.caves serve DIR     (run inside the cluster's network namespace by cluster.py)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from testkit import LAYOUT, ROOT
from testkit.caves import Caves, QueryEngine

from . import config as cfg
from .kubectl import in_cluster, kubectl, wait_for

CLUSTER_IP = "10.96.0.50"  # k8s/overlays/caves names it in COUCHBASE_HOST
BOOTSTRAP_PORT = 11210


def listening_ports(pid: int) -> list[int]:
    """The TCP ports process pid listens on (its sockets' inodes matched in /proc/net/tcp)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


def serve(run: Path) -> int:
    engine = QueryEngine(run / "cbq-datastore", [LAYOUT.profiles], log_path=run / "logs" / "cbq-engine.log").start()
    caves = Caves(log_path=run / "logs" / "caves.log", engine=engine).start()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        kv = int(caves.connstr.rsplit(":", 1)[1])
        assert caves.proc is not None  # started
        ports = listening_ports(caves.proc.pid)
        caves.loaded("--count", "10000", "--seed", "1", "--token", (run / "token").read_text())
        (run / "caves.json").write_text(json.dumps({"kv": kv, "ports": ports}))
        while not stop:
            time.sleep(0.5)
    finally:
        caves.stop()  # and its engine
    return 0


def manifests(kv: int, ports: list[int]) -> str:
    named = [("bootstrap", BOOTSTRAP_PORT, kv)] + [(f"p{p}", p, p) for p in ports]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "couchbase", "namespace": cfg.NAMESPACE},
        "spec": {"clusterIP": CLUSTER_IP, "ports": [{"name": n, "port": p, "targetPort": t} for n, p, t in named]},
    }
    # A selector-less Service's endpoints match its ports by name; their port is where they go.
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "couchbase-caves",
            "namespace": cfg.NAMESPACE,
            "labels": {"kubernetes.io/service-name": "couchbase"},
        },
        "addressType": "IPv4",
        "ports": [{"name": n, "port": t, "protocol": "TCP"} for n, _, t in named],
        "endpoints": [{"addresses": [cfg.NODE_IP], "conditions": {"ready": True}}],
    }
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [service, slice_]})


def start(pid: int, run: Path) -> None:
    """CAVES in the cluster's network namespace, loaded; then its Service and EndpointSlice."""
    with open(run / "logs" / "caves-holder.log", "ab") as out:
        subprocess.Popen(
            [*in_cluster(pid), sys.executable, "-m", "tools.k8s.caves", "serve", str(run)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=ROOT,
        )
    wait_for("CAVES loaded", lambda: (run / "caves.json").exists(), 120)
    info = json.loads((run / "caves.json").read_text())
    kubectl("apply", "-f", "-", stdin=manifests(info["kv"], info["ports"]), capture=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        sys.exit(serve(Path(sys.argv[2])))
    sys.exit(__doc__)
