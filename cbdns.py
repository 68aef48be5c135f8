"""The nodes a connection string names, found as the Couchbase SDK finds them: DNS SRV.

A connection string of exactly one host that is a name (Capella's
``couchbases://cb.<id>.cloud.couchbase.com``) names its nodes by DNS: the targets of the SRV
records ``_couchbases._tcp.<name>`` (``_couchbase._tcp.<name>`` for ``couchbase://``), their
ports replacing any given; a name with no SRV record is used itself, on the default port
(``enable_dns_srv=false`` in the string turns this off). SDK 4.6.3 asks DNS itself when it
bootstraps a new ``Cluster``; the service asks the same records, with dnspython (imported only
here, only for such a string), to check the certificates of the very nodes the SDK will reach
(``cbtls``), to name the cause when DNS does not answer, and to follow the records when they
change (``cbconn``): the SDK asks again only when every node it knows has failed.
"""

from __future__ import annotations

import ipaddress
import time
from urllib.parse import urlsplit

from logs import log

KV_PORT, KV_TLS_PORT = 11210, 11207  # a host of a couchbase:// (couchbases://) string without a port
# One look-up's whole budget, every nameserver and retry included: the SDK gives its own 0.5 s.
TIMEOUT = 2.0
# Records are asked again when their TTL has passed, no more often than this (a TTL of 0, as
# a local DNS server gives, would be every ping) and at least this often (no SRV record: the
# name's own address is checked again, in case one appears).
MIN_TTL, MAX_TTL = 1.0, 60.0
# No key-value node answering for this long: DNS is asked again at once (Nodes.after_ping).
EVERY_NODE_LOST = 3.0


class DnsFailure(Exception):
    """DNS did not answer for the connection string's name: the message says which and why."""


Node = tuple[str, int]  # (host, port)


def hosts(connstr: str) -> list[Node]:
    """The hosts written in a connection string, with the scheme's key-value port where none is given."""
    default = KV_TLS_PORT if connstr.startswith("couchbases://") else KV_PORT
    netloc = connstr.split("://", 1)[-1].split("?", 1)[0].split("/", 1)[0]
    found = []
    for part in filter(None, (p.strip() for p in netloc.split(","))):
        parsed = urlsplit(f"//{part}")
        found.append((parsed.hostname or part, parsed.port or default))
    return found


def srv_name(connstr: str) -> str | None:
    """The SRV record the SDK asks for this connection string, or None when it asks none: more
    than one host, an IP address, or ``enable_dns_srv=false``."""
    written = hosts(connstr)
    if len(written) != 1 or "enable_dns_srv=false" in connstr.split("?", 1)[-1].lower():
        return None
    name = written[0][0]
    try:
        ipaddress.ip_address(name)
        return None
    except ValueError:
        pass
    service = "_couchbases" if connstr.startswith("couchbases://") else "_couchbase"
    return f"{service}._tcp.{name.rstrip('.')}"


def nodes(connstr: str, timeout: float = TIMEOUT) -> tuple[list[Node], float]:
    """The nodes the SDK would bootstrap from, and when to ask again (time.monotonic): the SRV
    targets in the records' order, or the written hosts. DnsFailure when DNS does not answer."""
    name = srv_name(connstr)
    if name is None:
        return hosts(connstr), float("inf")
    import dns.exception  # only for a connection string DNS names: dnspython (requirements.txt)
    import dns.resolver

    resolver = dns.resolver.Resolver()  # /etc/resolv.conf read anew: it can change under a pod
    try:
        answer = resolver.resolve(name, "SRV", lifetime=timeout, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):  # no record: the name itself, as the SDK does
        return hosts(connstr), time.monotonic() + MAX_TTL
    except dns.resolver.LifetimeTimeout:
        raise DnsFailure(
            f"DNS: no answer for {name} SRV within {timeout:g}s from {', '.join(map(str, resolver.nameservers))}"
        ) from None
    except dns.exception.DNSException as exc:  # no nameserver, every one refusing or failing
        raise DnsFailure(f"DNS: {name} SRV could not be resolved: {exc}") from None
    # In priority order, then by name: a server may give them in any order, and a new order is no change.
    ordered = sorted((record.priority, str(record.target).rstrip("."), int(record.port)) for record in answer)
    targets = [(host, port) for _, host, port in ordered]
    ttl = min(max(float(answer.rrset.ttl if answer.rrset is not None else 0), MIN_TTL), MAX_TTL)
    return targets, time.monotonic() + ttl


class Nodes:
    """The nodes a connection string names, as last resolved, and when to ask again; which of them
    the connection in use bootstrapped from, and whether it is time to reconnect through others."""

    def __init__(self, connstr: str):
        self.connstr = connstr
        self.srv = srv_name(connstr)  # the record asked, or None: the written hosts
        self.nodes = hosts(connstr)
        self.due = 0.0  # time.monotonic
        self.failure: str | None = None  # why DNS did not answer the last time it was asked
        self.bootstrapped_from: list[Node] = []  # by the connection in use
        self.none_answer_since: float | None = None  # no key-value node has answered since (time.monotonic)

    def resolve(self) -> list[Node]:
        """Asked now (DnsFailure when DNS does not answer); kept for ``nodes``."""
        self.nodes, self.due = nodes(self.connstr)
        return self.nodes

    def lost_all(self) -> bool:
        return self.none_answer_since is not None and time.monotonic() - self.none_answer_since >= EVERY_NODE_LOST

    def after_ping(self, answered: bool, may_renew: bool) -> None:
        """The SRV records asked again when their TTL has passed, or at once (if a reconnection may
        follow) when no node has answered for EVERY_NODE_LOST seconds: the SDK asks DNS only when it
        bootstraps, so a cluster whose every node was replaced is reached only through new names."""
        self.none_answer_since = None if answered else self.none_answer_since or time.monotonic()
        if self.srv is None or (time.monotonic() < self.due and not (may_renew and self.lost_all())):
            return
        before = self.nodes
        try:
            after = self.resolve()
        except DnsFailure as exc:  # the connection in use goes on; asked again in a while
            self.due = time.monotonic() + MIN_TTL
            if str(exc) != self.failure:
                log(f"couchbase: {exc}; the connection in use goes on")
                self.failure = str(exc)
            return
        self.failure = None
        if after != before:
            log(f"couchbase: DNS: {self.srv} now names {text(after)} (was {text(before)})")

    def moved(self, trusted: set[Node] | None) -> bool:
        """Whether to reconnect through the nodes DNS names now: they are not those the connection
        in use bootstrapped from, and either none of them is (the cluster moved), or no node has
        answered for EVERY_NODE_LOST seconds. Over TLS (``trusted``: the nodes whose certificates
        the last check passed) only when one of them was checked: the SDK bootstraps from one."""
        new, old = self.nodes, self.bootstrapped_from
        if self.srv is None or new == old or (trusted is not None and not set(new) & trusted):
            return False
        return self.lost_all() or not set(new) & set(old)


def text(nodes: list[Node]) -> str:
    return ", ".join(f"{host}:{port}" for host, port in nodes) or "no node"
