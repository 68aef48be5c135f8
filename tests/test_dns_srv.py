"""Capella's connection string as Capella gives it, one DNS name, through a real DNS server.

The driver, tests/dns_srv.py, runs in a network and mount namespace of its own
(``testkit.netns``: root, ``unshare -n -m``) whose ``/etc/resolv.conf`` names Debian's dnsmasq
(``testkit.dns``) alone, so the SDK's own DNS client and the service's (dnspython) both ask it.
Its SRV records name CAVES nodes behind tests/terminator.py's TLS terminator. About 90 seconds.
"""

from __future__ import annotations

import pytest

from testkit import ROOT, netns
from testkit.dns import resolv_conf

pytestmark = pytest.mark.external


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    reason = netns.unavailable("dnsmasq", "haproxy", "openssl")
    if reason:
        pytest.fail(f"cannot run here: {reason} (tests/README.md, external tier)")
    files = {"resolv.conf": resolv_conf(tmp_path_factory.mktemp("dns"))}
    return netns.run(ROOT / "tests" / "dns_srv.py", files=files, timeout=600)


def no_trouble(found: dict) -> None:
    assert found["tracebacks"] == 0, found["log"]


@pytest.mark.parametrize("scenario", ["srv_tls", "srv_plain"])
def test_an_srv_name_serves_every_route_as_the_nodes_listed_do(report, scenario):
    """couchbases://cb.test.local (and couchbase://): the SRV targets' certificates checked, ready,
    and every key-value answer byte for byte what a connection string listing the nodes gives."""
    found = report[scenario]
    assert report["plain"]["ready_after_s"] is not None
    assert found["ready_after_s"] is not None and found["ready_after_s"] <= 20, found
    assert found["equal_plain"], found
    no_trouble(found)


def test_a_name_with_no_srv_record_is_used_itself(report):
    found = report["no_srv"]
    assert found["ready_after_s"] is not None and found["equal_plain"], found
    assert not any("DNS:" in line for line in found["log"]), found["log"]
    no_trouble(found)


def test_a_certificate_for_another_name_behind_an_srv_target_is_refused_and_named(report):
    found = report["wrong_name"]
    assert found["ready_after_s"] is None and found["api"] == 503, found
    status, why = found["readyz"]
    assert status == 503 and "e0.evil.test.local" in why and "mismatch" in why, why
    cause = why.split("failed: ", 1)[1]  # /readyz's words are the log line's
    assert any(cause in line and "retrying in" in line for line in found["log"]), (cause, found["log"])
    no_trouble(found)


def test_dns_not_answering_at_start_up_is_the_cause_then_ready_within_seconds(report):
    found = report["dns_down"]
    status, why = found["readyz_while_down"]
    assert status == 503 and "DNS: no answer for _couchbases._tcp.cb.test.local SRV" in why, why
    assert any(why.split("failed: ", 1)[1] in line for line in found["log"]), found["log"]
    assert found["ready_after_dns_back_s"] is not None and found["ready_after_dns_back_s"] <= 10, found
    no_trouble(found)


def test_srv_naming_new_nodes_under_load_then_every_old_node_lost_fails_no_lookup(report):
    """The records name another cluster's nodes (the same data): the service checks their
    certificates, connects through them and moves; then every old node is lost. No lookup
    fails in any phase."""
    found = report["moved"]
    assert found["reconnected"], found["log"]
    for phase, statuses in found["answers"].items():
        assert set(statuses) == {"200"} and statuses["200"] > 0, (phase, found["answers"])
    assert found["bodies_equal_plain"]
    log = "\n".join(found["log"])
    assert log.index("now names m0.cb.test.local") < log.index("reconnected"), found["log"]
    no_trouble(found)


def test_every_node_lost_then_new_names_are_checked_before_they_are_trusted(report):
    """Every node lost, the records naming new ones whose certificate names another host:
    refused and named in /readyz; once their certificate names them, ready through them."""
    found = report["lost_then_renamed"]
    assert found["ready_after_s"] is not None and found["refused"], found
    status, why = found["readyz_refused"]
    assert status == 503 and "m0.cb.test.local" in why and "mismatch" in why, why
    assert found["ready_after_right_certificate_s"] is not None, found["log"]
    assert found["ready_after_right_certificate_s"] <= 15, found
    # At once: every answer right, or a 503 while the SDK's own connection still moves, never a
    # 404 for a profile that is there; two seconds on, every one right.
    assert set(found["after"]) <= {"200", "503"} and found["after"].get("200", 0) >= 90, found
    assert found["settled"] == {"200": 100}, found
    no_trouble(found)
