"""A network namespace of the test's own, where iptables and a DNS server touch nothing else.

A driver (``tests/node_loss.py``, ``tests/terminator.py``, ``tests/dns_srv.py``) runs in it
as root: ``unshare -n`` (a loopback of its own, brought up), and with ``files``, ``-m`` too,
with those files bind-mounted over ``/etc`` (``resolv.conf``, ``hosts``) in a private mount
namespace, so that every process it starts (the service, the SDK's own DNS client, dnspython,
glibc) resolves through the test's DNS server and no one else's does. The driver prints one
JSON report; ``run`` returns it. Where this cannot work (not root, no ``unshare``,
``iptables`` or ``ip``), ``unavailable`` says why: the tests then fail saying so.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path


def unavailable(*more_tools: str) -> str | None:
    """Why this machine cannot run a driver here, or None."""
    if os.geteuid() != 0:
        return "needs root for unshare -n and iptables (CI runs as root)"
    for tool in ("unshare", "iptables", "ip", *more_tools):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up && iptables -L INPUT -n"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"no private network namespace with iptables here: {probe.stderr.strip()[:200]}"
    return None


def command(argv: list[str], files: dict[str, Path] | None = None) -> list[str]:
    """``argv`` as run in a new network namespace (and mount namespace, with ``files``: each
    of them, a file under /etc by its name, bind-mounted from the given path)."""
    steps = ["ip link set lo up"]
    steps += [f"mount --bind {shlex.quote(str(source))} /etc/{name}" for name, source in (files or {}).items()]
    steps.append("exec " + shlex.join(argv))
    return ["unshare", "-n", *(["-m"] if files else []), "sh", "-c", " && ".join(steps)]


def run(driver: Path, *args: str, files: dict[str, Path] | None = None, timeout: float = 600) -> dict:
    """The driver's JSON report (the Python running this runs it); AssertionError with the end of
    its stderr when it fails."""
    done = subprocess.run(
        command([sys.executable, str(driver), *args], files),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout)
    print(json.dumps(found, indent=1))  # shown when a test fails
    return found
