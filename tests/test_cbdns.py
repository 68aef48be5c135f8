"""cbdns without a DNS server: which connection strings name their nodes by DNS SRV, the hosts
written, what an answer, no answer and no record give, and when the store reconnects through
new names. (Through a real DNS server, dnsmasq, with the SDK and CAVES: test_dns_srv.py.)"""

from __future__ import annotations

import subprocess
import sys
import time

import dns.exception
import dns.resolver
import pytest

import cbdns
from testkit import ROOT

pytestmark = pytest.mark.inprocess


@pytest.mark.parametrize(
    "connstr, record",
    [
        ("couchbases://cb.abc123.cloud.couchbase.com", "_couchbases._tcp.cb.abc123.cloud.couchbase.com"),
        ("couchbase://cb.example.net:11210", "_couchbase._tcp.cb.example.net"),  # a port does not stop it
        ("couchbase://cb.example.net.?network=external", "_couchbase._tcp.cb.example.net"),
        ("couchbases://a.example.net,b.example.net", None),  # more than one host
        ("couchbase://10.0.0.7", None),
        ("couchbase://[::1]:11210", None),
        ("couchbases://cb.example.net?enable_dns_srv=false", None),
    ],
)
def test_which_connection_strings_the_sdk_resolves_by_srv(connstr, record):
    assert cbdns.srv_name(connstr) == record


def test_the_written_hosts_with_the_schemes_port():
    assert cbdns.hosts("couchbases://a.example.com,b.example.com:1207, [::1]?network=external") == [
        ("a.example.com", 11207),
        ("b.example.com", 1207),
        ("::1", 11207),
    ]
    assert cbdns.hosts("couchbase://a,b:12000") == [("a", 11210), ("b", 12000)]


class Record:
    def __init__(self, priority: int, target: str, port: int):
        self.priority, self.target, self.port = priority, target, port


class Answer(list):
    rrset = type("RRset", (), {"ttl": 30})()


def resolving(monkeypatch, outcome):
    """dnspython's resolver answering (or raising) ``outcome``, and the names it was asked."""
    asked: list = []

    def resolve(self, name, rdtype, **options):
        asked.append((name, rdtype, options))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(dns.resolver.Resolver, "resolve", resolve)
    return asked


def test_srv_targets_in_priority_order_and_their_ttl(monkeypatch):
    answer = Answer([Record(1, "n1.cb.example.net.", 11207), Record(0, "n0.cb.example.net.", 11207)])
    asked = resolving(monkeypatch, answer)
    started = time.monotonic()
    found, due = cbdns.nodes("couchbases://cb.example.net:18000")
    assert found == [("n0.cb.example.net", 11207), ("n1.cb.example.net", 11207)]  # the SRV ports, not 18000
    assert started + 29 < due <= time.monotonic() + 30
    ((name, rdtype, options),) = asked
    assert (name, rdtype, options["search"], options["lifetime"]) == (
        "_couchbases._tcp.cb.example.net",
        "SRV",
        False,
        cbdns.TIMEOUT,
    )


@pytest.mark.parametrize("no_record", [dns.resolver.NXDOMAIN(), dns.resolver.NoAnswer()])
def test_no_srv_record_is_the_name_itself(monkeypatch, no_record):
    resolving(monkeypatch, no_record)
    assert cbdns.nodes("couchbases://db.example.net")[0] == [("db.example.net", 11207)]
    assert cbdns.nodes("couchbase://db.example.net:12000")[0] == [("db.example.net", 12000)]


@pytest.mark.parametrize(
    "failure, said",
    [
        (
            dns.resolver.LifetimeTimeout(timeout=2.0, errors={}),
            "DNS: no answer for _couchbases._tcp.cb.x SRV within 2s",
        ),
        (dns.resolver.NoNameservers(), "DNS: _couchbases._tcp.cb.x SRV could not be resolved"),
        (dns.exception.DNSException("bad packet"), "DNS: _couchbases._tcp.cb.x SRV could not be resolved: bad packet"),
    ],
)
def test_dns_not_answering_is_a_failure_naming_the_record(monkeypatch, failure, said):
    resolving(monkeypatch, failure)
    with pytest.raises(cbdns.DnsFailure, match=said.replace(".", r"\.")):
        cbdns.nodes("couchbases://cb.x")


def test_dnspython_is_imported_only_for_a_name_resolved_by_srv():
    """The deployment that lists its nodes (or runs on the embedded store) loads nothing new."""
    check = (
        "import sys, cbdns; cbdns.nodes('couchbase://10.0.0.1,10.0.0.2'); "
        "import cbconn, stores; print('dns' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_the_records_are_followed_at_their_ttl_and_at_once_when_every_node_is_lost(monkeypatch, capsys):
    answers = [[("n0", 1), ("n1", 2)]]
    monkeypatch.setattr(cbdns, "nodes", lambda connstr: (answers[0], time.monotonic() + 3600))
    followed = cbdns.Nodes("couchbases://cb.example.net")
    followed.bootstrapped_from = followed.resolve()
    answers[0] = [("n0", 1), ("n2", 3)]  # one node replaced
    followed.after_ping(answered=True, may_renew=True)
    assert followed.nodes == [("n0", 1), ("n1", 2)]  # not asked before its TTL
    followed.due = 0
    followed.after_ping(answered=True, may_renew=True)
    assert followed.nodes == [("n0", 1), ("n2", 3)]
    assert "now names n0:1, n2:3 (was n0:1, n1:2)" in capsys.readouterr().err
    # A node replaced: the connection in use follows the cluster's map, no reconnection.
    assert not followed.moved(trusted=None)
    # Every node lost: asked again at once, and through new names once they are trusted.
    answers[0] = [("m0", 4), ("m1", 5)]
    followed.after_ping(answered=False, may_renew=True)
    assert followed.nodes == [("n0", 1), ("n2", 3)]  # not yet: lost for less than EVERY_NODE_LOST
    monkeypatch.setattr(cbdns, "EVERY_NODE_LOST", 0.0)
    followed.after_ping(answered=False, may_renew=True)
    assert followed.nodes == [("m0", 4), ("m1", 5)]
    assert not followed.moved(trusted=set())  # over TLS, none of the new names checked yet
    assert not followed.moved(trusted={("n0", 1)})
    assert followed.moved(trusted={("m0", 4)})
    assert followed.moved(trusted=None)  # plain: no certificate to check


def test_a_cluster_moved_is_followed_before_its_old_nodes_are_lost(monkeypatch):
    followed = cbdns.Nodes("couchbase://cb.example.net")
    followed.bootstrapped_from = [("n0", 1), ("n1", 2)]
    followed.nodes = [("m0", 4), ("m1", 5)]  # every node named anew, the old ones still answering
    assert followed.moved(trusted=None)
    followed.nodes = [("n1", 2), ("m0", 4)]
    assert not followed.moved(trusted=None)
    listed = cbdns.Nodes("couchbase://n0:1,n1:2")
    listed.nodes = [("m0", 4)]
    assert not listed.moved(trusted=None)  # nodes listed by hand: no DNS to follow


def test_dns_failing_while_connected_is_said_once_and_the_connection_goes_on(monkeypatch, capsys):
    def failing(connstr):
        raise cbdns.DnsFailure("DNS: no answer for _couchbase._tcp.cb.example.net SRV within 2s from 10.0.0.2")

    monkeypatch.setattr(cbdns, "nodes", failing)
    followed = cbdns.Nodes("couchbase://cb.example.net")
    for _ in range(3):
        followed.due = 0
        followed.after_ping(answered=True, may_renew=True)
    assert capsys.readouterr().err.count("the connection in use goes on") == 1
    assert followed.nodes == [("cb.example.net", 11210)]
