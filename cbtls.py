"""Couchbase over TLS (``couchbases://``): what is trusted, and the host-name check the SDK lacks.

Trust. With COUCHBASE_CA_CERT the SDK is given that PEM file alone (``trust_store_path``: it
then loads nothing else); without it, it trusts the system's CAs and Capella's, which it
bundles. The SDK would also trust the Mozilla bundle compiled into it; that is switched off
(``disable_mozilla_ca_certificates``): the system's store holds the public CAs and is
updated with the image, and every CA trusted is one more that can sign a node's name.

Host names. SDK 4.6.3 (the newest on PyPI on 2026-12-06) verifies a node's certificate chain
but not that it names the node (CXXCBC-838, fixed in the C++ client 1.4.0, in no Python
release yet). So the service checks it itself with Python's ``ssl``, against the same trust:
a handshake to each node the SDK bootstraps from (the connection string's hosts, or the targets
of its DNS SRV records: ``cbdns``), then to each node of the cluster's configuration, read over
such a verified connection (``NameCheck``), before the SDK connects, again whenever the nodes
answering or the SRV records change (a node back, added or replaced: checked before it is
trusted; a node gone is no longer asked), and every 30 s. A node whose certificate does not
name it refuses every lookup until a check passes again: its answers could come from anyone
holding a certificate of that CA.

Causes. When TLS fails the SDK only says "failed to connect" after its whole bootstrap
timeout; the handshake here fails at once and names the cause, for the log line.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
import time

from cbdns import Node, hosts
from logs import log

# Capella's root CA, as the SDK bundles it (couchbase-cxx-client core/capella_ca.hxx; valid to 2029-12-06):
# trusted when no CA is given, so that the service's check trusts what the SDK does.
CAPELLA_CA = """-----BEGIN CERTIFICATE-----
MIIDFTCCAf2gAwIBAgIRANLVkgOvtaXiQJi0V6qeNtswDQYJKoZIhvcNAQELBQAw
JDESMBAGA1UECgwJQ291Y2hiYXNlMQ4wDAYDVQQLDAVDbG91ZDAeFw0xOTEyMDYy
MjEyNTlaFw0yOTEyMDYyMzEyNTlaMCQxEjAQBgNVBAoMCUNvdWNoYmFzZTEOMAwG
A1UECwwFQ2xvdWQwggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQCfvOIi
enG4Dp+hJu9asdxEMRmH70hDyMXv5ZjBhbo39a42QwR59y/rC/sahLLQuNwqif85
Fod1DkqgO6Ng3vecSAwyYVkj5NKdycQu5tzsZkghlpSDAyI0xlIPSQjoORA/pCOU
WOpymA9dOjC1bo6rDyw0yWP2nFAI/KA4Z806XeqLREuB7292UnSsgFs4/5lqeil6
rL3ooAw/i0uxr/TQSaxi1l8t4iMt4/gU+W52+8Yol0JbXBTFX6itg62ppb/Eugmn
mQRMgL67ccZs7cJ9/A0wlXencX2ohZQOR3mtknfol3FH4+glQFn27Q4xBCzVkY9j
KQ20T1LgmGSngBInAgMBAAGjQjBAMA8GA1UdEwEB/wQFMAMBAf8wHQYDVR0OBBYE
FJQOBPvrkU2In1Sjoxt97Xy8+cKNMA4GA1UdDwEB/wQEAwIBhjANBgkqhkiG9w0B
AQsFAAOCAQEARgM6XwcXPLSpFdSf0w8PtpNGehmdWijPM3wHb7WZiS47iNen3oq8
m2mm6V3Z57wbboPpfI+VEzbhiDcFfVnK1CXMC0tkF3fnOG1BDDvwt4jU95vBiNjY
xdzlTP/Z+qr0cnVbGBSZ+fbXstSiRaaAVcqQyv3BRvBadKBkCyPwo+7svQnScQ5P
Js7HEHKVms5tZTgKIw1fbmgR2XHleah1AcANB+MAPBCcTgqurqr5G7W2aPSBLLGA
fRIiVzm7VFLc7kWbp7ENH39HVG6TZzKnfl9zJYeiklo5vQQhGSMhzBsO70z4RRzi
DPFAN/4qZAgD5q3AFNIq2WWADFQGSwVJhg==
-----END CERTIFICATE-----
"""
# A node that takes longer for a handshake, or for its configuration, is in trouble: checked when it answers again.
HANDSHAKE_TIMEOUT = 2.0
# Every node checked again this often, whatever the pings see: a certificate changed while its node
# kept answering (or reconnected between two pings) is found within this.
RECHECK_SECONDS = 30.0
SASL_AUTH, SELECT_BUCKET, GET_CLUSTER_CONFIG = 0x21, 0x89, 0xB5
AUTH_ERROR, NO_ACCESS = 0x20, 0x24  # the key-value status of a login refused, of a bucket not allowed


class Refused(Exception):
    """A node's certificate is not trusted or does not name it: the message says which and why."""


class Unchecked(Refused):
    """No node's certificate could be checked: none answered the check in time."""


class Denied(Refused):
    """A node whose certificate was checked refused the credentials (or the bucket to them)."""


def is_tls(connstr: str) -> bool:
    return connstr.startswith("couchbases://")


def sdk_options(ca_cert: str | None) -> dict:
    """The cluster options of the trust above."""
    return {"disable_mozilla_ca_certificates": True, **({"trust_store_path": ca_cert} if ca_cert else {})}


def trust(ca_cert: str | None) -> ssl.SSLContext:
    """What the SDK trusts (sdk_options), for Python's ssl: the chain and the host name checked."""
    context = ssl.create_default_context(cafile=ca_cert)  # with a file: that alone
    if not ca_cert:
        context.load_verify_locations(cadata=CAPELLA_CA)
    # OpenSSL's own checks of the chain, as the SDK makes them: Python 3.13's default adds
    # X509_STRICT, which refuses certificates the SDK accepts (one without an authority key id).
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


def answering() -> ssl.SSLContext:
    """For the NOOP probe of a lost node only: whether it answers, not whether it is trusted
    (it is sent nothing but the NOOP; the SDK's own connection verifies it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def handshake(host: str, port: int, context: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
    """A verified TLS connection to the node; Refused naming why it is not trusted, OSError when
    it does not answer."""
    raw = socket.create_connection((host, port), timeout)
    try:
        return context.wrap_socket(raw, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raw.close()
        raise Refused(f"TLS: the certificate of {host}:{port} is refused: {exc.verify_message} ({exc.reason})") from exc
    except ssl.SSLError as exc:
        raw.close()
        raise Refused(f"TLS: the handshake with {host}:{port} failed: {exc.reason or exc}") from exc
    except BaseException:
        raw.close()
        raise


def _call(sock: ssl.SSLSocket, opcode: int, key: bytes = b"", value: bytes = b"") -> bytes:
    """One memcached binary-protocol request and its answer's value; OSError unless it succeeded."""
    sock.sendall(struct.pack(">BBHBBHIIQ", 0x80, opcode, len(key), 0, 0, 0, len(key) + len(value), 0, 0) + key + value)
    header = _read(sock, 24)
    _, _, key_len, extras_len, _, status, body_len, _, _ = struct.unpack(">BBHBBHIIQ", header)
    body = _read(sock, body_len)
    if status in (AUTH_ERROR, NO_ACCESS) and opcode in (SASL_AUTH, SELECT_BUCKET):
        raise Denied(f"status 0x{status:x}")
    if status != 0:
        raise OSError(f"status 0x{status:x} to opcode 0x{opcode:x}")
    return body[extras_len + key_len :]


def _read(sock: ssl.SSLSocket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data


def nodes(sock: ssl.SSLSocket, host: str, user: str, password: str, bucket: str, external: bool) -> list[Node]:
    """Every node's (host, TLS key-value port) from the bucket's configuration, read on a verified
    connection to ``host`` (so PLAIN sends the password to no one else). Denied when the node
    refuses the credentials or the bucket (its message holds neither)."""
    try:
        _call(sock, SASL_AUTH, b"PLAIN", b"\0" + user.encode() + b"\0" + password.encode())
    except Denied:
        raise Denied(f"authentication: {host} refused the credentials of user {user!r}") from None
    try:
        _call(sock, SELECT_BUCKET, bucket.encode())
    except Denied:
        raise Denied(f"authentication: {host}: user {user!r} has no access to the bucket {bucket!r}") from None
    config = json.loads(_call(sock, GET_CLUSTER_CONFIG).replace(b"$HOST", host.encode()))
    found = []
    for node in config.get("nodesExt", []):
        name, ports = node.get("hostname") or host, node.get("services", {})
        alternate = node.get("alternateAddresses", {}).get("external", {})
        if external and alternate:
            name, ports = alternate.get("hostname", name), alternate.get("ports", ports)
        if "kvSSL" in ports:
            found.append((name, int(ports["kvSSL"])))
    return found


class NameCheck:
    """The check of every node's certificate, with the trust of the service's settings."""

    def __init__(self, connstr: str, ca_cert: str | None, user: str, password: str, bucket: str, timeout: float):
        self.bootstrap = hosts(connstr)
        self.external = "network=external" in connstr
        self.context: ssl.SSLContext | None = None  # read on the first check: a missing file is one log line
        self.ca_cert = ca_cert
        self.user, self.password, self.bucket, self.timeout = user, password, bucket, timeout
        self.refused: str | None = None  # why lookups are refused, since the last check
        self.checked: set[Node] = set()  # the nodes whose certificates the last check that passed checked
        self._answered: set[str] = set()  # the nodes answering at the last check
        self._checked_at = 0.0  # time.monotonic

    def after_ping(self, answered: set[str], bootstrap: list[Node] | None = None) -> None:
        """Check again when the nodes answering changed (a node back, another node), when the nodes
        to bootstrap from changed (DNS SRV), while refused (a check that timed out is tried each
        ping), and every RECHECK_SECONDS (the SDK may have reconnected to a node between two pings)."""
        bootstrap = self.bootstrap if bootstrap is None else bootstrap
        if (
            answered != self._answered
            or bootstrap != self.bootstrap
            or self.refused
            or time.monotonic() - self._checked_at >= RECHECK_SECONDS
        ):
            self._answered, self._checked_at, self.bootstrap = answered, time.monotonic(), bootstrap
            with contextlib.suppress(Refused):  # logged; lookups are refused until a check passes
                self.check(keep_checked=True)

    def check(self, log_refusal: bool = True, keep_checked: bool = False) -> None:
        """Every node's certificate names it, or ``refused`` says why (Refused; logged once, unless
        the caller logs it). ``keep_checked``: connected, names checked before stay trusted when no
        node answers this check in time (a busy machine), or refuses the credentials now (the SDK's
        connections logged in before), until a check passes."""
        try:
            checked, unchecked = self.run()
        except Refused as exc:
            if keep_checked and isinstance(exc, Unchecked | Denied) and self.refused is None:
                log(f"couchbase: {exc}: the names checked before stay trusted")
                return
            if log_refusal and self.refused != str(exc):
                log(f"couchbase: {exc}: lookups refused")
            self.refused = str(exc)
            raise
        if self.refused is not None:
            log(f"couchbase: TLS: the certificates of {len(checked)} node(s) name them: lookups resume")
        self.refused, self.checked = None, set(checked)
        if unchecked:
            log(f"couchbase: TLS: names not checked yet (checked when they answer): {'; '.join(unchecked)}")

    def run(self) -> tuple[list[Node], list[str]]:
        """(the nodes checked, why some were not): every node to bootstrap from, then every node of
        the configuration read from the first of them that gives it. Refused when a certificate is
        refused, Denied when the credentials are, Unchecked when no configuration could be read; a
        node that does not answer is only not checked (it is when it answers again)."""
        if self.context is None:
            try:
                self.context = trust(self.ca_cert)
            except (OSError, ssl.SSLError) as exc:
                raise Refused(f"TLS: cannot load COUCHBASE_CA_CERT {self.ca_cert}: {exc}") from None
        context = self.context
        checked: list[Node] = []
        unchecked: list[str] = []
        tried: set[Node] = set()
        found: list[Node] | None = None
        for host, port in self.bootstrap:
            sock = self._handshake(context, host, port, checked, unchecked, tried)
            if sock is None or found is not None:
                if sock is not None:
                    sock.close()
                continue
            try:
                with sock:
                    sock.settimeout(self.timeout)
                    found = nodes(sock, host, self.user, self.password, self.bucket, self.external)
            except (OSError, ValueError) as exc:
                unchecked.append(f"{host}:{port}: no configuration ({exc or type(exc).__name__})")
        if found is None:
            raise Unchecked(f"TLS: no node's certificate could be checked ({'; '.join(unchecked) or 'no node'})")
        for name, kv_port in found:
            sock = self._handshake(context, name, kv_port, checked, unchecked, tried)
            if sock is not None:
                sock.close()
        return checked, unchecked

    def _handshake(
        self, context: ssl.SSLContext, host: str, port: int, checked: list[Node], unchecked: list[str], tried: set[Node]
    ) -> ssl.SSLSocket | None:
        """A verified connection to a node not tried yet in this check, noted as checked; None when
        it was tried, or does not answer (noted as unchecked). Refused when its certificate is."""
        if (host, port) in tried:
            return None
        tried.add((host, port))
        try:
            sock = handshake(host, port, context, self.timeout)
        except Refused as exc:
            raise Refused(f"{exc}{self._trusting()}") from None
        except OSError as exc:
            unchecked.append(f"{host}:{port}: {exc or type(exc).__name__}")
            return None
        checked.append((host, port))
        return sock

    def _trusting(self) -> str:
        return f" (trusting {self.ca_cert} alone)" if self.ca_cert else " (trusting the system's CAs and Capella's)"
