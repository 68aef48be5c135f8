"""A real one-node Kubernetes (tools/k8s/VERSION) for the service, inside a private network and mount namespace.

    python3 -m tools.k8s.cluster up [--store embedded|caves]   start it, load the images, apply k8s/overlays/<store>
    python3 -m tools.k8s.cluster kubectl -n userprofile get pods     kubectl inside the cluster's network
    python3 -m tools.k8s.cluster down                           stop everything; nothing is left behind

A holder process (this file's `_holder`, started under `unshare --net --mount`) owns the namespaces:
loopback and a veth for the node's address, the CNI bridge, and as its children etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, containerd, the kubelet, kube-proxy (iptables) and metrics-server.
The host's network, /run and /var/log are never touched: the holder mounts its own over them. The
cluster's files live in data/k8s/ (certificates, configuration, logs) and a tmpfs inside the
namespace (etcd, images, pods). `down` stops the holder, kills whatever is left in its namespaces and
the pods' cgroups, removes those cgroups and data/k8s/. Needs root, iptables and unshare
(tools/install_k8s.sh installs the rest).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from testkit import ROOT

from . import caves
from . import config as cfg
from .config import BIN, NAMESPACE, RUN
from .kubectl import holder_pid, in_cluster, kubectl, log, wait_for

LOGS_KEPT = ROOT / "data" / "k8s-logs"
# The image `make image` builds, with pyproject.toml's version as its tag, as k8s/overlays/one-node names it.
SERVICE_IMAGE = (
    f"localhost/userprofile-service:{tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['version']}"
)
PAUSE_IMAGE = "localhost/userprofile-k8s/pause:static"
# The kubelet sets these sysctls when they differ (and panics on oops is not ours to set on a shared
# host): inside the mount namespace a file with the value it wants is mounted over each.
KERNEL_TUNABLES = {"vm/overcommit_memory": "1", "kernel/panic": "10", "kernel/panic_on_oops": "1"}
DAEMONS = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "kubelet",
    "kube-proxy",
    "metrics-server",
]


def need_host() -> None:
    """Fail with what is missing: this cluster needs root, iptables and unshare, never a silent skip."""
    missing = [] if os.geteuid() == 0 else ["root (uid 0)"]
    missing += [
        c
        for c in ("unshare", "nsenter", "iptables", "ip", "openssl", "etcd", "containerd", "runc", "ctr", "podman")
        if not shutil.which(c)
    ]
    missing += [
        str(BIN / b)
        for b in ("kube-apiserver", "kubelet", "kubectl", "metrics-server")
        if not os.access(BIN / b, os.X_OK)
    ]
    if missing:
        raise SystemExit(
            "k8s: cannot run a cluster here, missing: "
            + ", ".join(missing)
            + " (tools/install_k8s.sh installs the programs; root is needed for namespaces)"
        )


# -- the holder: runs inside the namespaces ---------------------------------------------------
def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def holder() -> int:
    mem = RUN / "mem"
    # Private mounts: a tmpfs for the cluster's state, and over the two host directories whose paths
    # some components fix (/run/containerd for cadvisor, /run/netns for the pods' namespaces).
    for target in ("/run", "/var/log", str(mem)):
        sh("mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", target)
    for d in ("/run/containerd", "/run/netns", "/run/lock"):
        os.makedirs(d, exist_ok=True)
    tunables = RUN / "sysctl"
    tunables.mkdir(exist_ok=True)
    for name, value in KERNEL_TUNABLES.items():
        fake = tunables / name.replace("/", ".")
        fake.write_text(value + "\n")
        sh("mount", "--bind", str(fake), f"/proc/sys/{name}")
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "k8s0", "type", "veth", "peer", "name", "k8s1")
    sh("ip", "addr", "add", f"{cfg.NODE_IP}/24", "dev", "k8s0")
    sh("ip", "link", "set", "k8s0", "up")
    sh("ip", "link", "set", "k8s1", "up")
    sh("ip", "route", "add", "default", "dev", "k8s0")
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")  # this namespace's own

    logs = RUN / "logs"
    commands = cfg.commands(BIN, RUN)
    procs: dict[str, subprocess.Popen] = {}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    def start(name: str) -> None:
        with open(logs / f"{name}.log", "ab") as out:
            procs[name] = subprocess.Popen(
                commands[name], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=RUN
            )

    def wait(what: str, probe, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not probe():
            for name, p in procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}: see {logs / name}.log")
            if stop or time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not ready in {timeout:.0f} s")
            time.sleep(0.2)

    def api_ok(path: str) -> bool:
        r = subprocess.run(
            [str(BIN / "kubectl"), f"--kubeconfig={RUN / 'kubeconfig'}", "get", "--raw", path],
            capture_output=True,
            text=True,
        )
        return r.returncode == 0 and r.stdout.strip() == "ok"

    status = 0
    try:
        for name in ("etcd", "kube-apiserver"):
            start(name)
        wait("kube-apiserver", lambda: api_ok("/readyz"))
        for name in ("kube-controller-manager", "kube-scheduler", "containerd"):
            start(name)
        wait("containerd", lambda: os.path.exists("/run/containerd/containerd.sock"))
        for name in ("kubelet", "kube-proxy", "metrics-server"):
            start(name)
        (RUN / "holder.ready").write_text("ready\n")
        while not stop:
            for name, p in procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}: see {logs / name}.log")
            time.sleep(0.5)
    except RuntimeError as exc:
        (RUN / "holder.failed").write_text(f"{exc}\n")
        status = 1
    # Down, in the reverse order: the kubelet first, so nothing restarts what is stopped next.
    for name in reversed(DAEMONS):
        if name in procs and procs[name].poll() is None:
            procs[name].terminate()
            try:
                procs[name].wait(15)
            except subprocess.TimeoutExpired:
                procs[name].kill()
        if name == "kubelet":
            kill_pods()
    return status


# -- leaving nothing behind -------------------------------------------------------------
CGROUPS = Path("/sys/fs/cgroup")


def pod_cgroups() -> list[Path]:
    """The kubelet's cgroups (cgroupfs driver: /kubepods in every hierarchy), deepest first."""
    found = [d for top in CGROUPS.glob("*/kubepods") for d in top.rglob("*") if d.is_dir()]
    found += list(CGROUPS.glob("*/kubepods"))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def kill_pods() -> None:
    """SIGKILL every process in the pods' cgroups: the containers and their pause processes."""
    for _ in range(50):
        pids: set[int] = set()
        for d in pod_cgroups():
            with contextlib.suppress(OSError):  # a cgroup gone since it was listed
                pids.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):  # exited meanwhile
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def kill_namespace_members(ns_ids: dict[str, str]) -> int:
    """SIGKILL every process still in the holder's network or mount namespace; how many there were."""
    killed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            mine = any(os.readlink(proc / "ns" / kind) == ident for kind, ident in ns_ids.items())
        except OSError:
            continue
        if mine:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def down() -> int:
    if (RUN / "holder.failed").exists():
        log(f"the holder stopped: {(RUN / 'holder.failed').read_text().strip()}")
    pid = holder_pid()
    ns_ids = json.loads((RUN / "namespaces.json").read_text()) if (RUN / "namespaces.json").exists() else {}
    if pid:
        log(f"stopping the cluster (holder {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while holder_pid() and time.monotonic() < deadline:
            time.sleep(0.2)
    leftovers = 0
    for _ in range(20):
        kill_pods()
        n = kill_namespace_members(ns_ids) if ns_ids else 0
        leftovers += n
        if not n:
            break
        time.sleep(0.2)
    for d in pod_cgroups():
        try:
            d.rmdir()
        except OSError:
            time.sleep(0.1)
            d.rmdir()
    if RUN.exists():
        # The logs outlive the cluster (data/k8s-logs/, the last run's), for a failure to be read.
        shutil.rmtree(LOGS_KEPT, ignore_errors=True)
        if (RUN / "logs").exists():
            shutil.copytree(RUN / "logs", LOGS_KEPT)
        shutil.rmtree(RUN)
    left = [str(d) for d in pod_cgroups()]
    if left:
        log(f"cgroups left: {left}")
        return 1
    log(f"down: nothing left (processes killed after the holder: {leftovers})")
    return 0


# -- up: from the host ------------------------------------------------------------------
def prepare(store: str) -> None:
    if holder_pid():
        raise SystemExit("k8s: a cluster is already running: python3 -m tools.k8s.cluster down first")
    if RUN.exists():
        shutil.rmtree(RUN)
    for d in ("logs", "mem", "cni", "images"):
        (RUN / d).mkdir(parents=True)
    cfg.make_pki(RUN / "pki")
    (RUN / "kubeconfig").write_text(cfg.kubeconfig(RUN / "pki"))
    (RUN / "containerd.toml").write_text(
        cfg.containerd_toml(RUN / "mem" / "containerd", "/run/containerd", PAUSE_IMAGE, RUN / "cni")
    )
    (RUN / "cni" / "10-pods.conflist").write_text(cfg.cni_conflist(RUN / "mem" / "cni-ipam"))
    (RUN / "kubelet.yaml").write_text(
        cfg.kubelet_yaml(RUN / "pki", RUN / "mem" / "pod-logs", "/run/containerd/containerd.sock")
    )
    (RUN / "kube-proxy.yaml").write_text(cfg.kube_proxy_yaml(RUN / "kubeconfig"))
    token = RUN / "token"
    token.touch(mode=0o600)
    token.write_text(secrets.token_urlsafe(24))
    (RUN / "store").write_text(store)


def save_images() -> subprocess.Popen:
    """podman save of both images, in the background while the cluster starts."""
    script = " && ".join(
        f"podman save --quiet -o {RUN / 'images' / (n + '.tar')} {image}"
        for n, image in (("pause", PAUSE_IMAGE), ("service", SERVICE_IMAGE))
    )
    env = {**os.environ, "CONTAINERS_CONF": str(ROOT / "tools" / "containers.conf")}
    return subprocess.Popen(["sh", "-c", script], env=env)


def start_holder() -> int:
    with open(RUN / "logs" / "holder.log", "ab") as out:
        proc = subprocess.Popen(
            [
                "unshare",
                "--net",
                "--mount",
                "--propagation",
                "private",
                "--",
                sys.executable,
                "-m",
                "tools.k8s.cluster",
                "_holder",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=ROOT,
        )
    (RUN / "holder.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 120
    while not (RUN / "holder.ready").exists():
        if proc.poll() is not None or (RUN / "holder.failed").exists() or time.monotonic() > deadline:
            why = (RUN / "holder.failed").read_text().strip() if (RUN / "holder.failed").exists() else "timeout"
            raise SystemExit(f"k8s: the cluster did not start: {why} (logs in {RUN / 'logs'})")
        time.sleep(0.2)
    (RUN / "namespaces.json").write_text(
        json.dumps({kind: os.readlink(f"/proc/{proc.pid}/ns/{kind}") for kind in ("net", "mnt")})
    )
    return proc.pid


def import_images(pid: int, saver: subprocess.Popen) -> None:
    if saver.wait() != 0:
        raise SystemExit(
            f"k8s: podman save failed: is {SERVICE_IMAGE} built (make image) and the pause "
            "image (tools/install_k8s.sh)?"
        )
    for tar in ("pause", "service"):
        subprocess.run(
            [
                *in_cluster(pid, mount=True),
                "ctr",
                "--address",
                "/run/containerd/containerd.sock",
                "-n",
                "k8s.io",
                "images",
                "import",
                str(RUN / "images" / f"{tar}.tar"),
            ],
            check=True,
            capture_output=True,
        )


def apply_overlay(store: str) -> None:
    """The overlay as kubectl's own kustomize builds it, plainly (the base is a resource directory)."""
    rendered = kubectl("kustomize", str(ROOT / "k8s" / "overlays" / store), capture=True).stdout
    kubectl("apply", "-f", "-", stdin=rendered, capture=True)


def ready_pods() -> list[str]:
    out = kubectl("-n", NAMESPACE, "get", "pods", "-o", "json", capture=True, check=False).stdout or "{}"
    return [
        p["metadata"]["name"]
        for p in json.loads(out).get("items", [])
        if any(c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))
    ]


def up(store: str) -> int:
    need_host()
    started = time.monotonic()
    prepare(store)
    saver = save_images()
    pid = start_holder()
    log(f"control plane, containerd, kubelet and kube-proxy up in {time.monotonic() - started:.1f} s")
    wait_for(
        "node Ready",
        lambda: (
            kubectl(
                "get",
                "node",
                cfg.NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                capture=True,
                check=False,
            ).stdout
            == "True"
        ),
        60,
    )
    kubectl("apply", "-f", "-", stdin=cfg.METRICS_API, capture=True)
    import_images(pid, saver)
    # The namespace and its default ServiceAccount before any pod: without it the first pods are refused.
    kubectl("apply", "-f", str(ROOT / "k8s" / "base" / "namespace.yaml"), capture=True)
    wait_for(
        "the default ServiceAccount",
        lambda: kubectl("-n", NAMESPACE, "get", "serviceaccount", "default", check=False, capture=True).returncode == 0,
        30,
    )
    kubectl(
        "-n",
        NAMESPACE,
        "create",
        "secret",
        "generic",
        "userprofile-token",
        f"--from-file=USERPROFILE_TOKEN={RUN / 'token'}",
        capture=True,
    )
    # The Couchbase credentials: none on the embedded store, CAVES's own in the caves overlay.
    if store == "caves":
        caves.start(pid, RUN)
    apply_overlay(store)
    wait_for("the first pod Ready", ready_pods, 180)
    first = time.monotonic() - started
    kubectl("-n", NAMESPACE, "rollout", "status", "deploy/userprofile-service", "--timeout=180s", capture=True)
    if store == "caves":  # the seeding Job (components/seed) ran with its own Secret, under the restricted profile
        waited = kubectl(
            "-n", NAMESPACE, "wait", "--for=condition=complete", "job/userprofile-seed", "--timeout=180s",
            capture=True, check=False, timeout=200,
        )  # fmt: skip
        said = kubectl("-n", NAMESPACE, "logs", "job/userprofile-seed", capture=True, check=False).stdout.strip()
        if waited.returncode != 0:
            raise SystemExit(f"k8s: the seeding Job did not complete: {waited.stderr.strip()} {said[-1000:]}")
        log(f"the seeding Job completed: {said.splitlines()[-1] if said else '(no output)'}")
    print(
        f"cluster from nothing to first pod Ready: {first:.0f} s "
        f"(all {len(ready_pods())} pods Ready at {time.monotonic() - started:.0f} s; store: {store})",
        flush=True,
    )
    (RUN / "first_pod_ready_seconds").write_text(f"{first:.1f}\n")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m tools.k8s.cluster", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="start the cluster and deploy the service")
    u.add_argument(
        "--store",
        choices=["embedded", "caves"],
        default="embedded",
        help="the pods' store: SQLite on an emptyDir, or CAVES reached through a Service",
    )
    sub.add_parser("down", help="stop everything and remove what up made")
    k = sub.add_parser("kubectl", help="kubectl inside the cluster's network namespace")
    k.add_argument("args", nargs=argparse.REMAINDER)
    sub.add_parser("_holder", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["kubectl"]:  # everything after it is kubectl's, flags included
        return kubectl(*argv[1:], check=False, timeout=3600).returncode
    args = p.parse_args(argv)
    if args.cmd == "up":
        try:
            return up(args.store)
        except BaseException:
            log("up failed: stopping what was started")
            down()
            raise
    if args.cmd == "down":
        return down()
    return holder()


if __name__ == "__main__":
    sys.exit(main())
