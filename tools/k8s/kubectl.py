"""Reaching the running cluster: its holder process, a command inside its namespaces, kubectl and
waiting for a condition. cluster.py, caves.py and e2e.py all reach it through these, so that none
imports another for them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from .config import BIN, RUN


def log(msg: str) -> None:
    print(f"k8s: {msg}", file=sys.stderr, flush=True)


def holder_pid() -> int | None:
    try:
        pid = int((RUN / "holder.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def in_cluster(pid: int, mount: bool = False) -> list[str]:
    """The prefix that runs a command in the holder's network (and mount) namespace; none when this
    process is already in that network (e2e.py's scenarios run there) and needs no other mount."""
    if not mount and os.readlink("/proc/self/ns/net") == os.readlink(f"/proc/{pid}/ns/net"):
        return []
    return ["nsenter", "-t", str(pid), "-n"] + (["-m"] if mount else []) + ["--"]


def kubectl(
    *args: str, check: bool = True, capture: bool = False, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """kubectl with the cluster's admin kubeconfig, inside its network namespace."""
    pid = holder_pid()
    if pid is None:
        raise SystemExit("k8s: no cluster is running (python3 -m tools.k8s.cluster up)")
    return subprocess.run(
        [*in_cluster(pid), str(BIN / "kubectl"), f"--kubeconfig={RUN / 'kubeconfig'}", *args],
        check=check,
        text=True,
        input=stdin,
        timeout=timeout,
        capture_output=capture,
    )


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.3) -> None:
    """Until probe() is truthy; RuntimeError naming what did not happen (and where the logs are) when
    timeout passes first."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"k8s: {what}: not in {timeout:.0f} s (logs in {RUN / 'logs'})")
        time.sleep(interval)
