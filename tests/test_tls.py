"""Couchbase over TLS, as Capella and secured clusters are reached: CAVES behind a TLS terminator.

The driver, tests/terminator.py, runs in a network namespace of its own (``unshare -n``, as
root): haproxy terminates TLS with the test's own CA in front of each CAVES node's plain
key-value port, and iptables sends each node's TLS port there. It starts the real service
with ``couchbases://`` and reports; this asserts: the right CA serves every key-value route
as the plain path does, byte for byte; another CA, no CA (the system's and Capella's do not
sign it), a CA file missing and a certificate that does not name its node are refused, not ready, the log
naming the cause within the connect timeout plus 5 s; and an SDK whose request type
changed under the service's shortcut still answers every lookup. Node loss and start-up
with a node frozen over TLS: test_node_loss.py. About 60 seconds.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from datetime import datetime

import pytest

import cbsdk
import cbtls
from testkit import ROOT, netns
from testkit.pki import certificate_authority

pytestmark = pytest.mark.external

CONNECT_TIMEOUT = 5


@pytest.fixture(scope="module")
def report():
    reason = netns.unavailable("haproxy", "openssl")
    if reason:
        pytest.fail(f"cannot run here: {reason} (tests/README.md, external tier)")
    return netns.run(ROOT / "tests" / "terminator.py", "--connect-timeout", str(CONNECT_TIMEOUT))


def test_the_right_ca_serves_every_key_value_route_as_the_plain_path(report):
    assert report["tls_ready_after_s"] is not None
    assert report["tls_equal_plain"], report
    assert report["tls_statuses"] == report["plain_statuses"] == ["200", "404"]  # the last id is not there


def seconds_to(line: str, lines: list[str]) -> float:
    """From the service's first log line to ``line``'s stamp."""

    def stamp(text: str) -> datetime:
        return datetime.fromisoformat(text.split(" ", 1)[0])

    return (stamp(line) - stamp(lines[0])).total_seconds()


@pytest.mark.parametrize(
    "scenario, cause",
    [
        ("wrong_ca", "unable to get local issuer certificate"),
        ("no_ca", "unable to get local issuer certificate"),
        ("wrong_name", "IP address mismatch, certificate is not valid for '127.0.0.1'"),
        ("missing_ca", "cannot load COUCHBASE_CA_CERT"),
    ],
)
def test_a_certificate_not_trusted_for_its_node_is_refused_and_named(report, scenario, cause):
    found = report[scenario]
    assert found["ready_after_s"] is None, found  # never ready, so never a 200 from that node
    assert found["readyz_slowest_s"] < 1, found  # /readyz answers at once all along
    named = [line for line in found["log"] if cause in line and "TLS: " in line]
    assert named, found["log"]
    assert seconds_to(named[0], found["log"]) <= CONNECT_TIMEOUT + 5
    assert "retrying in" in named[0]  # and the service keeps trying
    assert found["tracebacks"] == 0


def test_a_changed_sdk_request_type_still_answers_every_lookup(report):
    found = report["changed_sdk"]
    assert found["changed"] == [200] * 50, found
    fallbacks = [line for line in found["log"] if "direct calls failed" in line]
    assert len(fallbacks) == 1 and "pycbc_kv_request" in fallbacks[0], found["log"]
    assert found["tracebacks"] == 0


def test_a_node_back_with_a_certificate_for_another_name_is_refused(report):
    """Lost, then back behind a certificate that names another host: found when it answers
    again (a check at each change of the nodes answering), lookups refused from then on."""
    found = report["returns_renamed"]
    assert found["before"] == 200
    assert found["refused_after_s"] <= 10, found
    assert found["after"] == [503], found
    assert any("lookups refused" in line and "mismatch" in line for line in found["log"]), found["log"]
    assert found["tracebacks"] == 0
    # Why the service checks: the SDK alone reads through that node (SDK 4.6.3; a newer one may not).
    print("SDK alone reads through a node of another name:", report["sdk_alone_reads_from_a_wrong_name"])


def test_a_node_answers_a_noop_over_tls(tmp_path):
    """The probe of a lost node on a TLS port (couchbases://): a handshake, then the NOOP; a
    plain NOOP to a TLS port, or a node that completes the handshake but never answers: no.
    (The plain probe: test_cbconn_socket.py.)"""
    cert = certificate_authority(tmp_path, "node", "/CN=node")  # self-signed: the probe verifies nothing
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, tmp_path / "node.key")
    refusal = bytes([0x81, 0x0A]) + bytes(4) + b"\x00\x24" + bytes(16)  # NOOP's answer: no access

    def listener(answer: bool):
        server = socket.create_server(("127.0.0.1", 0))

        def serve():
            while True:
                try:
                    raw, _ = server.accept()
                except OSError:
                    return
                try:
                    with context.wrap_socket(raw, server_side=True) as conn:
                        if conn.recv(24) == cbsdk.NOOP and answer:
                            conn.sendall(refusal)
                        time.sleep(0.5)
                except (OSError, ssl.SSLError):
                    pass  # the plain probe's bytes are no handshake

        threading.Thread(target=serve, daemon=True).start()
        return server, f"127.0.0.1:{server.getsockname()[1]}"

    answering, answering_node = listener(True)
    silent, silent_node = listener(False)
    with answering, silent:
        assert cbsdk.answers_noop(answering_node, 2, cbtls.answering())
        assert not cbsdk.answers_noop(answering_node, 0.5)
        started = time.monotonic()
        assert not cbsdk.answers_noop(silent_node, 0.3, cbtls.answering())
        assert time.monotonic() - started < 1.5
