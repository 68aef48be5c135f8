"""Certificates for tests and tools, made with openssl: a CA, and certificates it signs. The TLS
terminator's tests (tests/terminator.py), the TLS probe's (tests/test_tls.py) and the one-node
Kubernetes (tools/k8s/config.py) all make theirs here, valid for two days."""

from __future__ import annotations

import subprocess
from pathlib import Path

DAYS = "2"  # longer than any run that uses them


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def certificate_authority(work: Path, name: str, subject: str, cert: str | None = None) -> Path:
    """A self-signed CA in work: its key ``<name>.key`` and certificate (``cert``, or ``<name>.pem``)."""
    cert = cert or f"{name}.pem"
    openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", DAYS, "-subj", subject),
        *("-keyout", f"{name}.key", "-out", cert),
        cwd=work,
    )
    return work / cert


def issue(work: Path, name: str, subject: str, extension: str, ca_cert: str, ca_key: str) -> Path:
    """``<name>.crt`` and its key ``<name>.key`` in work, signed by the CA there, with one extension
    line (``subjectAltName=...``, ``extendedKeyUsage=clientAuth``)."""
    openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject),
        *("-keyout", f"{name}.key", "-out", f"{name}.csr"),
        cwd=work,
    )
    (work / f"{name}.ext").write_text(extension + "\n")
    openssl(
        *("x509", "-req", "-in", f"{name}.csr", "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial"),
        *("-days", DAYS, "-extfile", f"{name}.ext", "-out", f"{name}.crt"),
        cwd=work,
    )
    return work / f"{name}.crt"
