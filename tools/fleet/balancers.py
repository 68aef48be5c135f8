"""The balancers in front of the fleet (HAProxy in TCP or HTTP mode, nginx) and the Fleet that
changes its instances and their endpoints as a Kubernetes Deployment does (k8s/README.md)."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from testkit import end, free_port

from .instances import Instance, wait_for_port

PRESTOP_SECONDS = 5  # k8s/base/deployment.yaml's preStop sleep
ENDPOINT_DELAY_SECONDS = 1  # a new pod ready -> an old pod leaves the endpoints
# How nginx follows endpoint changes: "slots" without a reload (as ingress-nginx does, in its
# case with Lua), "reloads" with a new configuration and SIGHUP at each change (the control).
NGINX_FOLLOWS = ("slots", "reloads")


class HAProxy:
    """Debian's haproxy in the foreground; servers come and go through the admin socket."""

    SLOTS = 16  # server lines declared up front, in maintenance until an instance takes one

    def __init__(self, workdir: Path, mode: str):
        self.mode, self.name = mode, f"haproxy-{mode}"
        self.dir = workdir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.sock = free_port(), self.dir / "admin.sock"
        self.slots: dict[str, str] = {}  # instance name -> server name
        self.proc: subprocess.Popen | None = None

    def config(self) -> str:
        if self.mode == "tcp":
            # As kube-proxy or an NLB: a connection is pinned to one instance, never retried
            # elsewhere, and no idle timeout of its own cuts it.
            mode = "    mode tcp\n    retries 0\n    timeout client 1h\n    timeout server 1h\n"
        else:
            # As an ingress: HTTP/1.1 keep-alive on both sides, each request balanced on its own,
            # idle backend connections reused; the default retry of a failed connect.
            mode = (
                "    mode http\n    option http-keep-alive\n    timeout client 65s\n    timeout server 30s\n"
                "    timeout http-keep-alive 65s\n"
            )
        servers = "".join(f"    server s{i} 127.0.0.1:9 disabled\n" for i in range(1, self.SLOTS + 1))
        return (
            f"global\n    stats socket {self.sock} level admin\n    maxconn 4096\n"
            f"defaults\n{mode}    timeout connect 2s\n"
            f"frontend fe\n    bind 127.0.0.1:{self.port}\n    default_backend be\n"
            f"backend be\n    balance roundrobin\n{servers}"
        )

    def start(self, instances) -> HAProxy:
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(self.config())
        with open(self.dir / "haproxy.log", "ab") as out:
            self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc, self.name)
        deadline = time.monotonic() + 10
        while not self.sock.exists() and time.monotonic() < deadline:  # bound a moment after the port
            time.sleep(0.02)
        for inst in instances:
            self.add(inst)
        return self

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.sock))
            s.sendall(line.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def add(self, inst: Instance) -> None:
        server = next(f"s{i}" for i in range(1, self.SLOTS + 1) if f"s{i}" not in self.slots.values())
        self.slots[inst.name] = server
        self.command(f"set server be/{server} addr 127.0.0.1 port {inst.port}")
        self.command(f"set server be/{server} state ready")

    def remove(self, inst: Instance) -> None:
        # Maintenance: no new connection (TCP) or request (HTTP) goes there; in TCP mode the
        # connections already pinned stay, as conntrack keeps them after an endpoint leaves.
        self.command(f"set server be/{self.slots.pop(inst.name)} state maint")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Nginx:
    """Debian's nginx-light with an HTTP/1.1 keep-alive upstream pool.

    Open-source nginx changes its upstream servers only by a reload, and a reload closes the
    idle client connections of the old worker: a client that reuses connections without
    checking loses requests at each one (the "nginx reloads alone" control). So, with
    follows="slots", the upstream lists up front a port for every instance the fleet will
    start: a slot with no instance listening refuses at once, and a draining one answers with
    Connection: close; proxy_next_upstream sends such a request on to the next slot, and
    max_fails=0 keeps a refusal from marking a slot down (nginx would then skip it for
    fail_timeout after its instance came up). Endpoint changes then need
    no reload, but nginx cannot drop a server: an instance out of the endpoints keeps its
    share of nginx's requests until its listener closes.
    """

    name = "nginx"

    def __init__(self, workdir: Path, slots: list[int], follows: str = "slots", max_fails: int | None = 0):
        self.dir = workdir / "nginx"
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.slots, self.follows = slots, follows
        self.max_fails = max_fails  # None: nginx's default (max_fails=1 fail_timeout=10s)
        self.members: dict[str, int] = {}  # instance name -> port, as the endpoints list them
        self.proc: subprocess.Popen | None = None
        self.error_log = self.dir / "error.log"

    def config(self) -> str:
        fails = "" if self.max_fails is None else f" max_fails={self.max_fails}"
        ports = self.slots if self.follows == "slots" else self.members.values()
        servers = "".join(f"        server 127.0.0.1:{port}{fails};\n" for port in ports)
        tmp = self.dir / "tmp"
        user = "user root root;\n" if os.geteuid() == 0 else ""
        return (
            f"{user}daemon off;\nmaster_process on;\nworker_processes 1;\npid {self.dir}/nginx.pid;\n"
            f"error_log {self.error_log} notice;\nevents {{ worker_connections 2048; }}\n"
            f"http {{\n    access_log off;\n"
            + "".join(
                f"    {kind}_temp_path {tmp}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )
            + f"    upstream service {{\n{servers}        keepalive 32;\n    }}\n"
            f"    server {{\n        listen 127.0.0.1:{self.port};\n        keepalive_timeout 65s;\n"
            f"        location / {{\n            proxy_pass http://service;\n"
            f'            proxy_http_version 1.1;\n            proxy_set_header Connection "";\n'
            f"            proxy_next_upstream error timeout;\n"
            f"        }}\n    }}\n}}\n"
        )

    def write(self) -> None:
        (self.dir / "nginx.conf").write_text(self.config())

    def start(self, instances) -> Nginx:
        self.members = {inst.name: inst.port for inst in instances}
        self.write()
        with open(self.dir / "nginx.out", "ab") as out:
            self.proc = subprocess.Popen(
                ["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-e", str(self.error_log)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, self.proc, self.name)
        return self

    def reload(self) -> None:
        """A new configuration and SIGHUP, then wait until the new worker runs."""
        self.write()
        before = self.error_log.read_text(errors="replace").count("start worker process")
        assert self.proc is not None, "start() first"
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.error_log.read_text(errors="replace").count("start worker process") > before:
                return
            time.sleep(0.02)
        raise RuntimeError(f"nginx did not reload: {self.error_log.read_text()[-2000:]}")

    def add(self, inst: Instance) -> None:
        self.members[inst.name] = inst.port
        if self.follows == "reloads":
            self.reload()

    def remove(self, inst: Instance) -> None:
        del self.members[inst.name]
        if self.follows == "reloads":
            self.reload()

    def stop(self) -> None:
        if self.proc:
            end(self.proc, 10, signal.SIGQUIT)  # graceful


def make_balancer(kind: str, workdir: Path, slots: list[int], nginx_follows: str):
    if kind == "nginx":
        return Nginx(workdir, slots, nginx_follows)
    return HAProxy(workdir, kind.removeprefix("haproxy-"))


class Fleet:
    """Instances and the balancers in front of them, changed together as endpoints change."""

    def __init__(
        self,
        name: str,
        db: Path,
        workdir: Path,
        balancers: list[str],
        size: int,
        env: dict | None = None,
        capacity: int | None = None,
        nginx_follows: str = "slots",
    ):
        """`capacity`: how many instances the fleet will start in all (nginx's slots)."""
        self.name, self.db, self.env = name, db, env or {}
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.count = 0
        # Reserved now, taken in order by the instances as they start. Another program could
        # bind one meanwhile, as it could any free port between its choice and its use.
        self.ports = [free_port() for _ in range(capacity or size)]
        self.instances: list[Instance] = []  # in the endpoints
        self.leaving: list[Instance] = []
        self.terminators: list[threading.Thread] = []
        self.balancers: list = []
        try:
            for _ in range(size):
                self.instances.append(self.new())
            for inst in self.instances:
                inst.wait_ready()
            for b in balancers:
                self.balancers.append(make_balancer(b, self.dir, self.ports, nginx_follows))
                self.balancers[-1].start(self.instances)
        except BaseException:
            self.stop()  # nothing is left running when the fleet cannot start
            raise
        self.by_name = {b.name: b for b in self.balancers}

    def new(self) -> Instance:
        if self.count == len(self.ports):
            raise RuntimeError(f"{self.name}: more instances than the {len(self.ports)} the fleet was made for")
        self.count += 1
        return Instance(f"{self.name}-{self.count}", self.db, self.dir, self.env, self.ports[self.count - 1]).launch()

    def scale_up(self) -> Instance:
        """A new pod: started, ready, then in the endpoints."""
        inst = self.new().ready_or_stop()
        self.instances.append(inst)
        for b in self.balancers:
            b.add(inst)
        return inst

    def retire(self, inst: Instance, grace: float) -> None:
        """Out of the endpoints now, SIGTERM after the preStop, SIGKILL after the grace period."""
        self.instances.remove(inst)
        self.leaving.append(inst)
        for b in self.balancers:
            b.remove(inst)

        def terminate():
            time.sleep(PRESTOP_SECONDS)
            inst.terminate()
            inst.wait_exit(grace)

        t = threading.Thread(target=terminate, name=f"terminate-{inst.name}", daemon=True)
        t.start()
        self.terminators.append(t)

    def wait_retired(self) -> None:
        for t in self.terminators:
            t.join()
        self.terminators.clear()

    def rolling_restart(self, grace: float) -> None:
        """maxSurge 1, maxUnavailable 0: a new pod ready, an old one out 1 s later, and on."""
        for old in list(self.instances):
            self.scale_up()
            time.sleep(ENDPOINT_DELAY_SECONDS)
            self.retire(old, grace)
        self.wait_retired()

    def exit_codes(self) -> dict[str, int | None]:
        return {inst.name: inst.exit_code for inst in self.leaving}

    def drain_seconds(self) -> float:
        """The longest time from SIGTERM to exit among the instances that left."""
        return max((inst.exit_at - inst.term_at for inst in self.leaving), default=math.nan)

    def stop(self) -> None:
        for b in self.balancers:
            with contextlib.suppress(Exception):
                b.stop()
        for inst in self.instances + self.leaving:
            with contextlib.suppress(Exception):
                inst.stop()
