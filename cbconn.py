"""The Couchbase store: the official Python SDK (4.x) behind ``store.Store``.

Start-up never blocks: ``from_options`` returns at once and a background
thread connects, retrying with capped exponential backoff, then keeps pinging
the key-value nodes. It is ready once one node answers: a node that is down
does not hold up the others. Until connected, and while no key-value node
answers (neither a ping nor a lookup), every lookup raises ``StoreUnavailable``
at once; otherwise every SDK call ends within the cluster's timeout for its
service, so nothing waits past it.

The key-value reads, with their replica reads (COUCHBASE_REPLICA_READS), are ``cbread``'s.
While a ping finds a node lost, gets ask every copy at once, so a frozen node costs no wait
per request; when it is back, new connections replace the SDK's stalled ones.

Documents are written and read as raw JSON bytes (``RawJSONTranscoder``) made
by ``store.encode_doc``, so the service sends exactly the bytes the embedded
store would. The transcoder and the timeouts are set once, on the cluster,
so a call passes no options; a get calls the SDK's C++ get directly
(``cbsdk.DirectCalls``) once a check against the public one agrees; and the SDK's
tracing and metrics are off unless COUCHBASE_SDK_OBSERVABILITY asks for them
(they cost CPU on every operation).

Over TLS, ``cbtls``: what is trusted, and each node's certificate name checked (the SDK does not).
A connection string of one name (Capella's) names its nodes by DNS SRV: ``cbdns`` resolves them
as the SDK does, follows the records, and says when to connect anew through new names. Until
connected, ``cause`` says why not in the attempt's log line's words: /readyz answers with it.

Nickname and username lookups are prepared SQL++ statements, a page at a time (``cbquery``);
the documents are key-value gets. The collections' names are the settings' (``store.Layout``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from couchbase.auth import PasswordAuthenticator
from couchbase.cluster import Cluster
from couchbase.diagnostics import ClusterState, ServiceType
from couchbase.options import (
    ClusterOptions,
    ClusterTimeoutOptions,
    WaitUntilReadyOptions,
)

import cbdns
import cbtls
import settings
from cbhealth import NodeHealth
from cbload import Loading
from cbquery import Querying, QueryWatch, Statements
from cbread import Reading
from cbsdk import (
    RAW,
    DirectCalls,
    answers_noop,
    cause,
    connection_string,
    describe,
    kv_answers,
    ping_nodes,
)
from logs import log
from options import Options
from store import Layout, Store, StoreUnavailable


class CouchbaseStore(Reading, Loading, Querying, Store):
    def __init__(self, options: Options, tracing: Any = None) -> None:
        """Configured from the ``couchbase_*`` settings (settings.py); ``start()`` connects.
        ``tracing`` (``otelexport.StoreTracing``): the SDK's spans go to its tracer."""
        self.connstr = connection_string(options)
        self.bucket_name, self.scope_name = options.couchbase_bucket, options.couchbase_scope
        self.layout = Layout.of(options)
        self.sql = Statements(self.layout)
        # The password goes to the SDK and the name check only: no message is made with it.
        user, password = settings.couchbase_credentials(options)  # ValueError naming a missing one
        self._auth = PasswordAuthenticator(user, password)
        self.user = user
        self.kv_timeout = timedelta(seconds=options.couchbase_kv_timeout)
        self.query_timeout = timedelta(seconds=options.couchbase_query_timeout)
        self.query_watch = QueryWatch(options.couchbase_query_timeout)
        self.connect_timeout = timedelta(seconds=options.couchbase_connect_timeout)
        self.mgmt_timeout = timedelta(seconds=options.couchbase_mgmt_timeout)
        self.retry_max = options.couchbase_retry_max
        self.health_interval = options.couchbase_health_interval
        self.observability = options.couchbase_sdk_observability
        self._plan_reads(options.couchbase_replica_reads, options.couchbase_replica_delay, self.kv_timeout)
        # Pings and the direct calls' check run between pings, briefly: a node that takes
        # half a second to answer a ping is in trouble, and the replicas spare requests the wait.
        self._between_pings = min(self.kv_timeout, timedelta(seconds=0.5))
        # The SDK's objects once connected, None before (the SDK ships no type hints).
        self.cluster: Any = None
        self.bucket: Any = None
        self.scope: Any = None
        self.collections: dict = {}
        self.tracer = tracing.tracer if tracing is not None else None
        self.direct = DirectCalls(
            self.bucket_name,
            self.scope_name,
            self.layout.auth,
            self.layout.token_key,
            tracing.recording if tracing is not None else None,
        )
        # Over TLS: the trust of COUCHBASE_CA_CERT, and the check of the nodes' names (cbtls).
        self.ca_cert = options.couchbase_ca_cert or None
        self.names = (
            cbtls.NameCheck(
                self.connstr,
                self.ca_cert,
                user,
                password,
                self.bucket_name,
                cbtls.HANDSHAKE_TIMEOUT,
            )
            if cbtls.is_tls(self.connstr)
            else None
        )
        self._probe_tls = cbtls.answering() if self.names else None
        self._connected = threading.Event()
        self.health = NodeHealth(self.replica_reads)
        self._renew_after = 0.0  # no reconnection before this (time.monotonic)
        self.dns = cbdns.Nodes(self.connstr)  # the nodes the connection string names (DNS SRV)
        # Why the store is not connected, in the words of the attempt's log line: /readyz says it.
        self.cause = "connecting: the first attempt is under way"
        self._retired: list[tuple[float, Cluster]] = []  # (when to close, cluster) after a reconnection
        self._stop = threading.Event()
        self._ping_now = threading.Event()  # set on close too, so that the watch ends
        self._thread: threading.Thread | None = None

    @classmethod
    def from_options(cls, options: Options, tracing: Any = None) -> CouchbaseStore:
        """Connecting starts in the background, and this returns at once."""
        store = cls(options, tracing)
        store.start()
        return store

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> CouchbaseStore:
        """The same from environment variables alone, as tests and tools have them."""
        return cls.from_options(settings.defaults(environ))

    def __str__(self) -> str:
        return f"Couchbase at {self.connstr}, bucket {self.bucket_name}, scope {self.scope_name}"

    # -- connection ----------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="couchbase-connect", daemon=True)
        self._thread.start()

    def _options(self) -> ClusterOptions:
        # Everything a key-value call needs is set here, once: the calls pass no options.
        # One node's socket gets a quarter of an attempt, so that a frozen node
        # tried first leaves time to bootstrap from another.
        return ClusterOptions(
            self._auth,
            transcoder=RAW,
            **(cbtls.sdk_options(self.ca_cert) if self.names else {}),
            enable_tracing=self.observability,
            **({"tracer": self.tracer} if self.tracer is not None else {}),  # then enable_tracing is moot
            enable_metrics=self.observability,
            timeout_options=ClusterTimeoutOptions(
                kv_timeout=self.kv_timeout,
                query_timeout=self.query_timeout,
                connect_timeout=self.connect_timeout / 4,
                bootstrap_timeout=self.connect_timeout,
                management_timeout=self.mgmt_timeout,
            ),
        )

    def _connect_once(self) -> None:
        # DNS and TLS at once, naming the cause, where the SDK would wait out its bootstrap timeout.
        targets = self.dns.resolve()  # DnsFailure
        if self.names:
            self.names.bootstrap = targets
            self.names.check(log_refusal=False)  # the attempt's line names it
        cluster = Cluster(self.connstr, self._options())  # blocks up to the bootstrap timeout
        try:
            bucket = cluster.bucket(self.bucket_name)
            # Degraded: one key-value node answering is enough; the others may be down.
            cluster.wait_until_ready(
                self.connect_timeout,
                WaitUntilReadyOptions(service_types=[ServiceType.KeyValue], desired_state=ClusterState.Degraded),
            )
        except Exception:
            cluster.close()
            raise
        if self._stop.is_set():  # closed while connecting
            cluster.close()
            return
        self._use(cluster, bucket)
        self.dns.bootstrapped_from = targets
        self.health.healthy = True
        self._connected.set()

    def _run(self) -> None:
        delay, attempt = 0.5, 0
        while not self._stop.is_set() and not self._connected.is_set():
            attempt += 1
            try:
                self._connect_once()
                if not self._connected.is_set():
                    return
                log(f"couchbase: connected to {self.connstr}, bucket {self.bucket_name}, scope {self.scope_name}")
            except Exception as exc:  # every failure is retried: the cluster may come up later
                self.cause = f"connecting to {self.connstr} (bucket {self.bucket_name}) failed: {cause(exc, self.user)}"
                # A DNS answer costs nothing to ask for again: ready within a second of DNS answering.
                wait = min(delay, 1.0) if isinstance(exc, cbdns.DnsFailure) else delay
                log(f"couchbase: {self.cause} (attempt {attempt}); retrying in {wait:g}s")
                self._stop.wait(wait)
                delay = min(delay * 2, self.retry_max)
        # Connected: watch the key-value nodes, so that gets skip the wait on a lost
        # node's active copies, and lookups fail fast while no node answers (a killed
        # cluster refuses at once, but the SDK would queue each get until its timeout).
        while True:
            self._ping_now.wait(self.health_interval)
            self._ping_now.clear()
            if self._stop.is_set():
                return
            self._watch()

    def _watch(self) -> None:
        answered, lost = self._ping()
        if (
            not answered
            and lost
            and kv_answers(self.collections[self.layout.auth], self.layout.token_key, self._between_pings)
        ):
            self.health.answered = True
        # DNS SRV: the records followed (cbdns.Nodes). Then this ping's health, before a check of the
        # names lifts a refusal: no node answering refuses lookups (and /readyz) at once.
        self.dns.after_ping(bool(answered) or self.health.answered, time.monotonic() >= self._renew_after)
        self.health.after_ping(answered, lost)
        if self.names:
            self.names.after_ping(answered, self.dns.nodes)
        if (
            answered
            and lost
            and time.monotonic() >= self._renew_after
            and any(answers_noop(node, 0.25, self._probe_tls) for node in lost if ":" in node)
        ):
            # Back, but the SDK's connection to it still waits out TCP's retransmission
            # backoff (it stalled while the node was frozen): as long as the node was
            # gone, up to that again. New connections to every node end that at once.
            self._renew_after = time.monotonic() + 5
            if self._reconnect():
                self.health.after_ping(*self._ping())
            else:  # the node answers, the new connection not yet: again at the next ping, not 5 s on
                self._renew_after = 0.0
        # A new connection through the names DNS gives now, when the cluster moved or every node
        # was lost, once they are checked.
        trusted = None if self.names is None else set() if self.names.refused else self.names.checked
        if time.monotonic() >= self._renew_after and self.dns.moved(trusted):
            self._renew_after = time.monotonic() + 5
            if self._reconnect():
                self.dns.bootstrapped_from = self.dns.nodes
                self.health.after_ping(*self._ping())
        while self._retired and self._retired[0][0] <= time.monotonic():
            self._retired.pop(0)[1].close()
        self._check_direct()

    def _reconnect(self) -> bool:
        """A new connection to the cluster, used when every node answers on it; the
        old one is closed once the requests that went out on it have ended."""
        try:
            cluster = Cluster(self.connstr, self._options())
        except Exception as exc:  # the connection in use goes on
            log(f"couchbase: reconnecting failed ({describe(exc)})")
            return False
        try:
            bucket = cluster.bucket(self.bucket_name)
            cluster.wait_until_ready(
                min(self.connect_timeout, timedelta(seconds=2)),
                WaitUntilReadyOptions(service_types=[ServiceType.KeyValue]),
            )
            lost = self._ping(bucket)[1]
        except Exception as exc:  # not every node answers yet
            lost = {"": describe(exc)}
        if lost:
            cluster.close()
            log(f"couchbase: reconnecting: not every key-value node answers yet ({'; '.join(lost.values())})")
            return False
        self._retired.append((time.monotonic() + self.kv_timeout.total_seconds() + 1, self.cluster))
        self._use(cluster, bucket)
        log("couchbase: reconnected, every key-value node answers on the new connections")
        return True

    def _use(self, cluster: Any, bucket: Any) -> None:
        """Gets go to this connection from now on, and by its direct calls once checked."""
        scope = bucket.scope(self.scope_name)
        collections = {name: scope.collection(name) for name in self.layout.all}
        self.direct.found(collections[self.layout.profiles], self.observability)
        self.cluster, self.bucket, self.scope, self.collections = cluster, bucket, scope, collections
        self._check_direct()

    def _ping(self, bucket: Any = None) -> tuple[set[str], dict[str, str]]:
        return ping_nodes(bucket or self.bucket, self._between_pings)

    def wait_connected(self, timeout: float) -> None:
        """Block until connected; StoreUnavailable after ``timeout`` seconds."""
        if not self._connected.wait(timeout):
            raise StoreUnavailable(f"couchbase: not connected to {self.connstr} after {timeout:g}s")

    def _collection(self, name: str) -> Any:
        if not self._connected.is_set():
            raise StoreUnavailable(f"couchbase: not connected: {self.cause}")
        if not self.health.healthy:
            lost = "; ".join(f"{node}: {why}" for node, why in self.health.lost.items())
            raise StoreUnavailable(f"couchbase: no key-value node answers ({lost or 'none pinged'})")
        if self.names and self.names.refused:
            raise StoreUnavailable(f"couchbase: {self.names.refused}")
        return self.collections[name]

    def _check_direct(self) -> None:
        self.direct.check(self.collections[self.layout.auth], self._between_pings)

    def ping(self) -> None:
        """What the background pings last found: answers at once, for /readyz."""
        self._collection(self.layout.auth)

    def close(self) -> None:
        self._stop.set()
        self._ping_now.set()
        self.query_watch.close()
        if self._thread is not None:
            # Not for long: a connection attempt in progress ends by itself (daemon thread).
            self._thread.join(1)
        for _, cluster in self._retired:
            cluster.close()
        self._retired = []
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        self._connected.clear()
