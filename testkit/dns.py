"""A real DNS server for a test domain: Debian's dnsmasq (``dnsmasq-base``), serving SRV and A
records on 127.0.0.53, inside a network namespace of the test's own (``testkit.netns``) whose
``/etc/resolv.conf`` names it alone.

``--local`` makes a name of the domain without a record NXDOMAIN (not REFUSED), as a real
zone answers; records are changed by starting dnsmasq again with others (its command-line
records are not re-read on SIGHUP). Every query is logged, with the answer, to ``dnsmasq.log``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

ADDRESS = "127.0.0.53"
INSTALL_HINT = "dnsmasq is not installed: tools/install_debs.sh dnsmasq=dnsmasq-base (make test does it)"


def resolv_conf(work: Path) -> Path:
    """A resolv.conf naming this server alone (the SDK reads only its first ``nameserver`` line)."""
    path = work / "resolv.conf"
    path.write_text(f"nameserver {ADDRESS}\noptions timeout:1 attempts:1\n")
    return path


class Dnsmasq:
    """dnsmasq for ``domain``: ``srv`` maps a record name to its targets, (host, port) each;
    ``hosts`` a host name to its IPv4 address."""

    def __init__(self, work: Path, domain: str):
        if shutil.which("dnsmasq") is None:
            raise RuntimeError(INSTALL_HINT)
        self.work, self.domain = work, domain
        self.proc: subprocess.Popen | None = None

    def serve(self, srv: dict[str, list[tuple[str, int]]], hosts: dict[str, str]) -> Dnsmasq:
        """Serve these records from now on (a running dnsmasq is replaced)."""
        self.stop()
        args = [
            "dnsmasq",
            "-k",
            "--user=root",
            "--pid-file=",
            "--no-resolv",
            "--no-hosts",
            f"--listen-address={ADDRESS}",
            "--bind-interfaces",
            "--log-queries=extra",
            f"--log-facility={self.work / 'dnsmasq.log'}",
            f"--local=/{self.domain}/",
        ]
        for name, targets in srv.items():
            args += [f"--srv-host={name},{host},{port},{n},0" for n, (host, port) in enumerate(targets)]
        args += [f"--host-record={host},{address}" for host, address in hosts.items()]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.work / "dnsmasq.err", "ab"))  # noqa: SIM115  # dnsmasq keeps it
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dnsmasq did not start: {(self.work / 'dnsmasq.err').read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        """Whether it answers on TCP (it listens on UDP and TCP at once)."""
        try:
            socket.create_connection((ADDRESS, 53), 0.2).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def log(self) -> str:
        path = self.work / "dnsmasq.log"
        return path.read_text(errors="replace") if path.exists() else ""
