"""cbconn at the SDK boundary, in-process: the SQL++ path CAVES cannot run, error mapping,
replica reads as the health model (test_cbhealth.py) steers them, the direct calls'
safety, connection strings (over real sockets: test_cbconn_socket.py).

Nothing here is the SDK but its exception classes and option types: the fakes
below stand in for its scope, collection and bucket objects and for its C++
calls, so they show what cbconn does with what the SDK answers (and what it
hands the SDK: statement text, options), not what the SDK does. The real SDK
runs against CAVES in test_caves.py and, with a node lost, test_node_loss.py.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from couchbase import exceptions as cbe
from couchbase.diagnostics import PingState, ServiceType
from couchbase.transcoder import RawJSONTranscoder

import cbconn
import cbdns
import cbhealth
import cbquery
import cbsdk
import cbtls
import settings
import store as store_module
from metrics import Metrics
from store import FIRST_PAGE, StoreTimeout, StoreUnavailable
from testkit import EmptyStore
from testkit.caves import CREDENTIALS

pytestmark = pytest.mark.inprocess


class Row:
    def __init__(self, value: bytes, is_replica: bool = False):
        self.value, self.is_replica = value, is_replica


class MultiResult:
    def __init__(self, results: dict, exceptions: dict):
        self.results, self.exceptions = results, exceptions
        self.all_ok = not exceptions


class FakeCollection:
    """Stored raw bytes by key; ``fail`` makes every call raise it; the active copies
    of the keys in ``lost`` do not answer (their replicas do)."""

    def __init__(
        self,
        docs: dict[str, bytes] | None = None,
        fail: Exception | None = None,
        lost: frozenset[str] | set[str] = frozenset(),
    ):
        self.docs = docs or {}
        self.fail = fail
        self.lost = set(lost)
        self.replica_fail: Exception | None = None
        self.calls: list[tuple] = []

    def get(self, key, *options):
        self.calls.append(("get", key, options))
        if self.fail:
            raise self.fail
        if key in self.lost:
            raise cbe.UnAmbiguousTimeoutException(message="unambiguous_timeout")
        if key not in self.docs:
            raise cbe.DocumentNotFoundException()
        return Row(self.docs[key])

    def get_any_replica(self, key, *options):
        self.calls.append(("get_any_replica", key, options))
        if self.replica_fail:
            raise self.replica_fail
        if key not in self.docs:
            raise cbe.DocumentUnretrievableException()
        return Row(self.docs[key], is_replica=key in self.lost)

    def upsert_multi(self, docs, *options):
        self.calls.append(("upsert_multi", list(docs), options))
        if self.fail:
            raise self.fail
        self.docs.update(docs)
        return MultiResult({key: Row(b"") for key in docs}, {})

    def get_multi(self, keys, *options):
        self.calls.append(("get_multi", list(keys), options))
        if self.fail:
            raise self.fail
        found = {k: Row(self.docs[k]) for k in keys if k in self.docs}
        missing = {k: cbe.DocumentNotFoundException() for k in keys if k not in self.docs}
        return MultiResult(dict(reversed(found.items())), missing)  # dict order is not query order


class FakeQueryResult:
    def __init__(self, rows):
        self._rows = rows

    def rows(self):
        return iter(self._rows)


class FakeScope:
    def __init__(self, rows=(), fail: Exception | None = None):
        self.rows, self.fail = list(rows), fail
        self.queries: list[tuple] = []

    def query(self, statement, options):
        self.queries.append((statement, options))
        if self.fail:
            raise self.fail
        return FakeQueryResult(self.rows)


def make_store(scope=None, profiles=None, auth=None, connected=True, healthy=True, **env):
    store = cbconn.CouchbaseStore(
        settings.defaults(
            {
                "COUCHBASE_HOST": "couchbase://fake",
                "COUCHBASE_USER": "user",
                "COUCHBASE_PASSWORD": "pw",
                "COUCHBASE_KV_TIMEOUT": "1.5",
                "COUCHBASE_QUERY_TIMEOUT": "3",
                **env,
            }
        )
    )
    store.scope = scope or FakeScope()
    store.collections = {
        "user_data": profiles or FakeCollection(),
        "user_images": FakeCollection(),
        "service_auth": auth or FakeCollection(),
    }
    if connected:
        store._connected.set()
    store.health.healthy = healthy
    return store


# -- the query path --------------------------------------------------------------
FIRST = store_module.FIRST_PAGE
NICKNAME_STATEMENT = (
    "SELECT RAW [META().id, record_id] FROM `user_data` WHERE nickname = $nickname "
    "AND record_id > $after ORDER BY record_id LIMIT $limit"
)


def test_nickname_is_a_prepared_query_of_a_page_with_named_parameters():
    nickname = "o'brien\" OR 1=1 --"
    scope = FakeScope(rows=[["user_data:7", 2], ["user_data:2", 7]])
    profiles = FakeCollection({"user_data:7": b'{"record_id":2}', "user_data:2": b'{"record_id":7}'})
    store = make_store(scope, profiles)

    assert store.find_by_nickname(nickname, FIRST, 100) == (
        [b'{"record_id":2}', b'{"record_id":7}'],
        None,
    )  # query order

    ((statement, options),) = scope.queries
    assert statement == NICKNAME_STATEMENT
    assert nickname not in statement
    assert options["named_parameters"] == {"nickname": nickname, "after": FIRST, "limit": 101}  # one more than a page
    assert options["adhoc"] is False
    assert options["timeout"] == timedelta(seconds=3)
    # No options per call: the cluster's transcoder and kv timeout (test_cluster_options).
    assert profiles.calls == [("get_multi", ["user_data:7", "user_data:2"], ())]


def test_a_full_page_gets_the_page_and_names_the_cursor():
    """One row more than the page came back: the page's documents only, and its last record_id."""
    rows = [[f"user_data:{n}", n] for n in (3, 5, 8)]
    profiles = FakeCollection({f"user_data:{n}": b"{%d}" % n for n in (3, 5, 8)})
    store = make_store(FakeScope(rows=rows), profiles)
    assert store.find_by_nickname("x", 1, 2) == ([b"{3}", b"{5}"], 5)
    assert profiles.calls == [("get_multi", ["user_data:3", "user_data:5"], ())]  # not the one more
    assert store.scope.queries[0][1]["named_parameters"]["after"] == 1


def test_username_is_a_prepared_query_of_a_page_with_named_parameters():
    scope = FakeScope(rows=[["user_data:3", 3]])
    store = make_store(scope, FakeCollection({"user_data:3": b'{"user_id":"jsmith3"}'}))
    assert store.find_by_username("jsmith3", FIRST, 10) == ([b'{"user_id":"jsmith3"}'], None)
    ((statement, options),) = scope.queries
    assert statement == NICKNAME_STATEMENT.replace("nickname = $nickname", "user_id = $username")
    assert options["named_parameters"] == {"username": "jsmith3", "after": FIRST, "limit": 11}
    assert options["adhoc"] is False


def test_renamed_collections_are_in_the_statements_and_keys():
    store = make_store(
        FakeScope(rows=[["people:1", 1]]),
        PROFILES_COLLECTION="people",
        IMAGES_COLLECTION="pics",
        AUTH_COLLECTION="secrets",
    )
    store.collections = {
        "people": FakeCollection({"people:1": b"{}"}),
        "pics": FakeCollection(),
        "secrets": FakeCollection({"secrets:1": b'{"token":"t"}'}),
    }
    assert store.find_by_nickname("n", FIRST, 5) == ([b"{}"], None)
    assert "FROM `people` WHERE" in store.scope.queries[0][0]
    assert store.get_profile("1") == b"{}" and store.read_token() == "t"
    assert store.sql.indexes == (
        "CREATE INDEX `people_nickname` IF NOT EXISTS ON `people`(nickname, record_id)",
        "CREATE INDEX `people_user_id_record_id` IF NOT EXISTS ON `people`(user_id, record_id)",
    )


def test_no_match_makes_no_key_value_call():
    profiles = FakeCollection()
    assert make_store(FakeScope(rows=[]), profiles).find_by_nickname("nobody", FIRST, 10) == ([], None)
    assert profiles.calls == []


def test_a_document_deleted_since_the_query_is_skipped():
    scope = FakeScope(rows=[["user_data:1", 1], ["user_data:2", 2]])
    store = make_store(scope, FakeCollection({"user_data:2": b"{}"}))
    assert store.find_by_nickname("x", FIRST, 10) == ([b"{}"], None)


@pytest.mark.parametrize(
    "error, expected",
    [
        (cbe.UnAmbiguousTimeoutException(message="timeout"), StoreTimeout),
        (cbe.AmbiguousTimeoutException(message="timeout"), StoreTimeout),
        (cbe.ServiceUnavailableException(message="no query node"), StoreUnavailable),
        (cbe.InternalServerFailureException(message="Streaming operation failed"), StoreUnavailable),
        (cbe.TemporaryFailException(message="overloaded"), StoreUnavailable),
        (cbe.RequestCanceledException(message="closed"), StoreUnavailable),
    ],
)
def test_query_errors_map_to_store_errors(error, expected):
    store = make_store(FakeScope(fail=error))
    with pytest.raises(expected) as raised:
        store.find_by_nickname("x", FIRST, 10)
    assert type(error).__name__ in str(raised.value)
    if expected is StoreUnavailable:
        assert not isinstance(raised.value, StoreTimeout)


def test_a_failing_fetch_after_the_query_is_a_store_error():
    failing = FakeCollection(fail=cbe.UnAmbiguousTimeoutException())
    store = make_store(FakeScope(rows=[["user_data:1", 1]]), failing)
    with pytest.raises(StoreTimeout):
        store.find_by_username("x", FIRST, 10)


class Stream:
    """The SDK's stream of a query's rows, as far as the watch uses it."""

    def __init__(self):
        self.cancelled = threading.Event()

    def cancel(self):
        self.cancelled.set()

    def is_cancelled(self):
        return self.cancelled.is_set()


class Unanswered:
    """A query the SDK sent and never answers (its re-prepare: cbquery's docstring), until cancelled."""

    def __init__(self):
        self._request = type("Request", (), {"_streaming_result": Stream()})()

    def rows(self):
        stream = self._request._streaming_result
        yield from ()
        stream.cancelled.wait(30)
        raise cbe.InternalSDKException(message="no metadata")  # what the SDK raises once cancelled


def test_a_query_the_sdk_never_answers_is_cancelled_after_its_timeout(capsys):
    store = make_store(COUCHBASE_QUERY_TIMEOUT="0.2")
    store.scope.query = lambda statement, options: Unanswered()
    started = time.monotonic()
    try:
        with pytest.raises(StoreTimeout, match="did not answer"):
            store.find_by_nickname("x", FIRST, 10)
    finally:
        store.close()
    assert 0.2 + cbquery.WATCH_GRACE <= time.monotonic() - started < 0.2 + cbquery.WATCH_GRACE + 2
    assert "cancelled (504)" in capsys.readouterr().err


# -- key-value path ----------------------------------------------------------------
PROFILE_DOCS = {f"user_data:{n}": b'{"record_id":%d}' % n for n in range(1, 21)}
TOKEN_DOC = {"service_auth:1": b'{"token":"t-1"}'}


def test_key_value_gets_and_their_errors():
    profiles = FakeCollection({"user_data:1": b'{"a":1}'})
    store = make_store(profiles=profiles)
    assert store.get_profile("1") == b'{"a":1}'
    assert store.get_profile("2") is None
    assert store.get_profile("9" * 300) is None  # longer than any Couchbase key: not asked
    # The active copy gets the replica delay (COUCHBASE_REPLICA_DELAY), no more.
    (_, key, (options,)), (_, key2, _) = profiles.calls
    assert (key, key2) == ("user_data:1", "user_data:2")
    assert options["timeout"] == timedelta(seconds=0.1)
    for error, expected in (
        (cbe.AmbiguousTimeoutException(), StoreTimeout),
        (cbe.TemporaryFailException(), StoreUnavailable),
    ):
        profiles.fail = profiles.replica_fail = error
        with pytest.raises(expected):
            store.get_profile("1")


def test_replica_reads_off_is_todays_get():
    profiles = FakeCollection({"user_data:1": b'{"a":1}'}, lost={"user_data:1"})
    store = make_store(profiles=profiles, COUCHBASE_REPLICA_READS="false")
    with pytest.raises(StoreTimeout):
        store.get_profile("1")
    assert profiles.calls == [("get", "user_data:1", ())]  # the cluster's kv timeout; no replica asked
    store.health.after_ping(set(), {"b:2": "timeout"})
    assert not store.health.degraded


def test_an_active_copy_that_does_not_answer_in_time_is_read_from_a_replica():
    profiles = FakeCollection(dict(PROFILE_DOCS), lost={"user_data:1"})
    store = make_store(profiles=profiles)
    assert store.get_profile("1") == b'{"record_id":1}'
    assert store.get_profile("2") == b'{"record_id":2}'
    assert [c[:2] for c in profiles.calls] == [
        ("get", "user_data:1"),
        ("get_any_replica", "user_data:1"),
        ("get", "user_data:2"),
    ]
    # The copies get what is left of the kv timeout.
    assert profiles.calls[1][2][0]["timeout"] == timedelta(seconds=1.4)
    assert store.counters() == {"replica_reads": 1}
    rendered = Metrics(store=store).render().decode()
    assert "\nuserprofile_store_replica_reads_total 1\n" in rendered
    assert "# TYPE userprofile_store_replica_reads_total counter" in rendered


def test_while_a_node_is_lost_gets_ask_every_copy_at_once():
    profiles = FakeCollection(dict(PROFILE_DOCS), lost={"user_data:1"})
    store = make_store(profiles=profiles)
    store.health.after_ping({"a:1"}, {"b:2": "timeout"})
    assert store.get_profile("1") == b'{"record_id":1}'
    assert store.get_profile("2") == b'{"record_id":2}'  # its active copy answered first: not a replica read
    assert [c[:2] for c in profiles.calls] == [("get_any_replica", "user_data:1"), ("get_any_replica", "user_data:2")]
    assert profiles.calls[0][2][0]["timeout"] == timedelta(seconds=1.5)
    assert store.counters() == {"replica_reads": 1}
    store.health.after_ping({"a:1", "b:2"}, {})  # back: the active copy first again
    profiles.calls.clear()
    assert store.get_profile("2") == b'{"record_id":2}'
    assert [c[0] for c in profiles.calls] == ["get"]


def test_slow_gets_with_every_node_answering_pause_hedging(capsys):
    """Hedging a slow cluster only adds to its load: when many gets wait out the delay
    and the ping finds every node, gets wait for the active copy for a while."""
    profiles = FakeCollection(dict(PROFILE_DOCS), lost={f"user_data:{n}" for n in range(1, 21)})
    store = make_store(profiles=profiles)
    for n in range(1, 21):
        assert store.get_profile(str(n))  # each hedged
        assert store._ping_now.is_set() == (n >= cbhealth.HEDGES_TO_PING)  # the next ping at once
    store.health.after_ping({"a:1", "b:2"}, {})
    assert "no hedged reads" in capsys.readouterr().err
    profiles.calls.clear()
    with pytest.raises(StoreTimeout):
        store.get_profile("1")  # the slow active copy, given the whole kv timeout
    assert profiles.calls == [("get", "user_data:1", ())]
    store.health._hedging_from = 0  # the pause is over
    store.health.after_ping({"a:1", "b:2"}, {})
    assert store.get_profile("1") == b'{"record_id":1}'
    # A node lost is no reason to pause: its gets ask every copy.
    for n in range(1, 21):
        store.get_profile(str(n))
    store.health.after_ping({"a:1"}, {"b:2": "timeout"})
    assert store.health.hedging and store.health.degraded


def test_not_found_on_every_copy_is_none_but_no_copy_answering_is_a_timeout():
    profiles = FakeCollection(dict(PROFILE_DOCS))
    store = make_store(profiles=profiles, COUCHBASE_KV_TIMEOUT="0.2")
    store.health.after_ping({"a:1"}, {"b:2": "timeout"})
    assert store.get_profile("999") is None  # every copy said so, at once

    def unanswered(key, options):  # what the SDK does when no copy answers: the same exception, late
        time.sleep(options["timeout"].total_seconds())
        raise cbe.DocumentUnretrievableException()

    profiles.get_any_replica = unanswered  # type: ignore[method-assign]  # this fake's replicas, made never to answer
    with pytest.raises(StoreTimeout):
        store.get_profile("1")


def test_a_lookup_is_refused_only_when_no_node_answers():
    store = make_store(profiles=FakeCollection(dict(PROFILE_DOCS)))
    store.health.after_ping({"a:1"}, {"b:2": "timeout"})  # one node of two: lookups go on
    store.ping()
    assert store.get_profile("1") == b'{"record_id":1}'  # answered by way of the copies...
    store.health.after_ping(set(), {"b:2": "timeout"})  # ...so a ping that lists only the lost node
    store.ping()  # refuses nothing
    store.health.after_ping(set(), {"a:1": "timeout", "b:2": "timeout"})  # none (the rules: test_cbhealth.py)
    with pytest.raises(StoreUnavailable):
        store.ping()
    with pytest.raises(StoreUnavailable):
        store.get_profile("1")


def test_the_loaders_writes_count_as_answers():
    """Just after connecting, a ping can list only a node still bootstrapping ("Bootstrap
    incomplete") while writes go through: the loader's next call is not refused."""
    store = make_store(auth=FakeCollection(dict(TOKEN_DOC)))
    store.upsert("user_data", [("user_data:1", {"record_id": 1})])
    store.health.after_ping(set(), {"127.0.0.1:11210": "error: Bootstrap incomplete, cannot perform ping."})
    assert store.read_token() == "t-1"  # itself an answer, for the next ping
    for _ in range(2):
        store.health.after_ping(set(), {"127.0.0.1:11210": "error: Bootstrap incomplete, cannot perform ping."})
    with pytest.raises(StoreUnavailable):  # nothing answered since: refused
        store.read_token()


class Report:
    def __init__(self, remote, state, error=None):
        self.remote, self.state, self.error, self.id = remote, state, error, "1f89a0"


class FakeBucket:
    def __init__(self, reports):
        self.reports = reports

    def ping(self, options):
        return type("PingResult", (), {"endpoints": {ServiceType.KeyValue: self.reports}})()


def test_a_ping_names_each_node_and_why_it_is_lost():
    bucket = FakeBucket(
        [
            Report("127.0.0.1:11210", PingState.OK),
            Report("127.0.0.1:11211", PingState.TIMEOUT, "code=14, message=unambiguous_timeout (14)"),
            Report("0.0.0.0:0", PingState.ERROR, 'no more endpoints left to connect to "127.0.0.1:11212"'),
            Report("0.0.0.0:0", PingState.ERROR, "Bootstrap incomplete, cannot perform ping."),
        ]
    )
    answered, lost = cbsdk.ping_nodes(bucket, timedelta(seconds=0.5))
    assert answered == {"127.0.0.1:11210"}
    assert lost == {
        "127.0.0.1:11211": "timeout: code=14, message=unambiguous_timeout (14)",
        "127.0.0.1:11212": 'error: no more endpoints left to connect to "127.0.0.1:11212"',
        "unnamed": "error: Bootstrap incomplete, cannot perform ping.",
    }


# -- the direct calls (cbsdk.core_calls): used only while they agree with the public ones
class RawResult:
    def __init__(self, value: bytes, replica: bool = False):
        self.raw_result = {"value": value, "flags": 0x2000000, "replica": replica}


class NewSdkError(Exception):
    """An exception type the error mapper has never seen."""


def fake_core(docs: dict[str, bytes], calls: list):
    """Stand-ins for the C++ get and get-any-replica: the stored bytes by the request's key."""

    def get(request):
        calls.append((request.opcode, request.collection, request.key))
        return RawResult(docs[request.key])

    return get, get


def direct_store(direct):
    docs = {**PROFILE_DOCS, **TOKEN_DOC}
    store = make_store(profiles=FakeCollection(dict(PROFILE_DOCS)), auth=FakeCollection(dict(TOKEN_DOC)))
    store.direct.unchecked = direct
    store._check_direct()
    return store, docs


def test_direct_calls_that_agree_with_the_public_ones_are_used():
    calls: list = []
    store, _ = direct_store(fake_core({**PROFILE_DOCS, **TOKEN_DOC}, calls))
    assert store.direct.calls is not None
    assert store.get_profile("3") == b'{"record_id":3}'
    assert calls[-1] == (cbsdk.GET, "user_data", "user_data:3")
    assert store.collections["user_data"].calls == []  # not the public get


def test_direct_calls_that_disagree_are_never_used(capsys):
    calls: list = []
    store, _ = direct_store(fake_core({**PROFILE_DOCS, "service_auth:1": b'{"token":"other"}'}, calls))
    assert store.direct.calls is None
    assert "do not agree" in capsys.readouterr().err
    calls.clear()
    assert store.get_profile("3") == b'{"record_id":3}'
    assert calls == []


@pytest.mark.parametrize("node_lost", [False, True])
@pytest.mark.parametrize(
    "change",
    [
        "attributes missing",
        "another result shape",
        "an unknown exception",
        "a CouchbaseException",
        "another request type",
    ],
)
def test_a_changed_sdk_layout_still_answers_every_lookup(change, node_lost, capsys):
    """The SDK changes under the store (after the check, or before it): every lookup is
    answered all the same, from the public calls, with one log line."""
    if change == "attributes missing":

        class Connection:  # a 4.6 layout, to show core_calls finds it...
            pycbc_get = pycbc_get_any_replica = staticmethod(lambda request: None)

        laid_out = FakeCollection()
        impl = type("Impl", (), {"_client_adapter": type("Adapter", (), {"connection": Connection})})
        laid_out._impl = impl  # type: ignore[attr-defined]  # the SDK's private layout, on this one fake
        assert cbsdk.core_calls(laid_out) == (Connection.pycbc_get, Connection.pycbc_get_any_replica)
        store, _ = direct_store(cbsdk.core_calls(FakeCollection()))  # ...and a layout without it
        assert store.direct.calls is None
    else:
        calls: list = []
        store, _ = direct_store(fake_core({**PROFILE_DOCS, **TOKEN_DOC}, calls))
        assert store.direct.calls is not None

        class WantedRequest:  # what a new SDK's C++ get would take instead of pycbc_kv_request
            pass

        def changed(request):
            if change == "another result shape":
                return {"value": b"{}", "flags": 0}
            if change == "a CouchbaseException":
                raise cbe.CouchbaseException(message="an error of the changed internals")
            if change == "another request type" and not isinstance(request, WantedRequest):
                # As the real C++ get answers an argument of another type (seen on 4.6.3).
                raise cbe.InvalidArgumentException(message="get requires a pycbc_kv_request argument")
            raise NewSdkError("what is this")

        store.direct.calls = (changed, changed)
    store.collections["user_data"].lost = {"user_data:5"}  # one through the replica path too
    if node_lost:  # every get asks every copy
        store.health.after_ping({"a:1"}, {"b:2": "timeout"})
    for n in range(1, 21):
        assert store.get_profile(str(n)) == b'{"record_id":%d}' % n
    assert store.direct.calls is None
    public = [(call, key) for call, key, _ in store.collections["user_data"].calls]
    if node_lost:
        assert public == [("get_any_replica", f"user_data:{n}") for n in range(1, 21)]
    else:  # each from its active copy, but the lost one
        assert [key for call, key in public if call == "get_any_replica"] == ["user_data:5"]
    lines = [line for line in capsys.readouterr().err.splitlines() if "direct" in line]
    assert len(lines) == (0 if change == "attributes missing" else 1), lines
    assert all("using the public ones" in line for line in lines)


def test_an_error_the_public_call_shares_keeps_the_direct_path():
    """A CouchbaseException of another kind than a timeout or "not found" is checked on the public
    call: when that fails alike, it was the store's, and the direct calls stay."""
    calls: list = []
    store, _ = direct_store(fake_core({**PROFILE_DOCS, **TOKEN_DOC}, calls))

    def unavailable(request):
        raise cbe.InternalServerFailureException(message="internal_server_failure")

    store.direct.calls = (unavailable, unavailable)
    failing = store.collections["user_data"]
    failing.fail = failing.replica_fail = cbe.InternalServerFailureException(message="internal_server_failure")
    with pytest.raises(StoreUnavailable):
        store.get_profile("1")
    assert store.direct.calls == (unavailable, unavailable)


def test_a_store_error_on_the_direct_path_keeps_it():
    calls: list = []
    store, _ = direct_store(fake_core({**PROFILE_DOCS, **TOKEN_DOC}, calls))
    direct = store.direct.calls

    def timing_out(request):
        raise cbe.UnAmbiguousTimeoutException(message="unambiguous_timeout")

    store.direct.calls = (timing_out, timing_out)
    with pytest.raises(StoreTimeout):
        store.get_profile("1")
    assert store.direct.calls is not None and direct is not None


def test_the_token_is_read_from_a_replica_too():
    auth = FakeCollection(dict(TOKEN_DOC), lost={"service_auth:1"})
    assert make_store(auth=auth).read_token() == "t-1"
    assert make_store(auth=FakeCollection()).read_token() is None
    assert make_store(auth=FakeCollection({"service_auth:1": b'{"other":1}'})).read_token() is None
    assert make_store(auth=FakeCollection({"service_auth:1": b"[1]"})).read_token() is None
    failing = FakeCollection(fail=cbe.UnAmbiguousTimeoutException())
    failing.replica_fail = cbe.UnAmbiguousTimeoutException()
    with pytest.raises(StoreTimeout):
        make_store(auth=failing).read_token()


def test_a_store_without_counters_counts_nothing():
    assert EmptyStore().counters() == {}
    assert b"replica" not in Metrics(store=EmptyStore()).render()


def test_not_connected_or_unhealthy_fails_at_once():
    for store in (make_store(connected=False), make_store(healthy=False)):
        for call, args in (
            (store.get_profile, ("1",)),
            (store.find_by_nickname, ("x", FIRST, 10)),
            (store.read_token, ()),
            (store.ping, ()),
        ):
            with pytest.raises(StoreUnavailable):
                call(*args)
        assert store.scope.queries == []


# -- configuration -------------------------------------------------------------------
@pytest.mark.parametrize(
    "env, expected",
    [
        ({"COUCHBASE_HOST": "db.example.com"}, "couchbase://db.example.com"),
        ({"COUCHBASE_HOST": "db.example.com", "COUCHBASE_TLS": "true"}, "couchbases://db.example.com"),
        ({"COUCHBASE_HOST": "cb.svc", "COUCHBASE_NETWORK": "external"}, "couchbase://cb.svc?network=external"),
        ({"COUCHBASE_HOST": "cb.svc", "COUCHBASE_NETWORK": "default"}, "couchbase://cb.svc"),
        (
            {"COUCHBASE_HOST": "a,b", "COUCHBASE_TLS": "1", "COUCHBASE_NETWORK": "external"},
            "couchbases://a,b?network=external",
        ),
        # A full connection string is used as it is, whatever the other variables say.
        (
            {
                "COUCHBASE_HOST": "couchbases://x.cloud.couchbase.com?ssl=no_verify",
                "COUCHBASE_TLS": "false",
                "COUCHBASE_NETWORK": "external",
            },
            "couchbases://x.cloud.couchbase.com?ssl=no_verify",
        ),
        ({"COUCHBASE_HOST": "couchbase://127.0.0.1:11210"}, "couchbase://127.0.0.1:11210"),
    ],
)
def test_connection_string(env, expected):
    assert cbsdk.connection_string(settings.defaults({**CREDENTIALS, **env})) == expected


def test_environment_defaults_and_timeouts(monkeypatch):
    started = []
    monkeypatch.setattr(cbconn.CouchbaseStore, "start", lambda self: started.append(self))  # no connecting
    s = cbconn.CouchbaseStore.from_environ(
        {"COUCHBASE_HOST": "h", **CREDENTIALS, "COUCHBASE_KV_TIMEOUT": "0.75", "COUCHBASE_QUERY_TIMEOUT": "4"}
    )
    assert started == [s]
    assert (s.bucket_name, s.scope_name) == ("sample_app", "profiles")
    assert s.kv_timeout == timedelta(seconds=0.75) and s.query_timeout == timedelta(seconds=4)
    assert s.connect_timeout == timedelta(seconds=10)


def test_cluster_options(monkeypatch):
    """What the key-value calls no longer pass is set once on the cluster; SDK observability
    is off unless asked for (its effect on a connected cluster: test_caves.py)."""
    monkeypatch.setattr(cbconn.CouchbaseStore, "start", lambda self: None)  # no connecting
    env = {"COUCHBASE_HOST": "h", **CREDENTIALS, "COUCHBASE_KV_TIMEOUT": "0.75"}
    for setting, expected in ((None, False), ("true", True), ("1", True), ("false", False), ("off", False)):
        store = cbconn.CouchbaseStore.from_environ(
            env if setting is None else {**env, "COUCHBASE_SDK_OBSERVABILITY": setting}
        )
        options = store._options()
        assert isinstance(options["transcoder"], RawJSONTranscoder)  # stored bytes, not re-encoded JSON
        assert options["kv_timeout"] == timedelta(seconds=0.75)
        # One node's socket gets a quarter of an attempt: a frozen node tried first leaves time for the others.
        assert (options["connect_timeout"], options["bootstrap_timeout"]) == (
            timedelta(seconds=2.5),
            timedelta(seconds=10),
        )
        assert (options["enable_tracing"], options["enable_metrics"]) == (expected, expected), setting


def test_unhedged_a_fast_error_of_the_active_copy_is_answered_by_a_replica():
    """Hedging paused (a busy machine) and a node killed: its connection resets at once, and
    the replicas answer; a timeout, which used the whole budget, is still a 504."""
    reset = FakeCollection(dict(PROFILE_DOCS), fail=cbe.RequestCanceledException(message="request_canceled"))
    store = make_store(profiles=reset)
    store.health.hedging = False
    assert store.get_profile("3") == b'{"record_id":3}'
    assert [call for call, _, _ in reset.calls] == ["get", "get_any_replica"]
    timing_out = FakeCollection(dict(PROFILE_DOCS), fail=cbe.UnAmbiguousTimeoutException(message="unambiguous_timeout"))
    store = make_store(profiles=timing_out)
    store.health.hedging = False
    with pytest.raises(StoreTimeout):
        store.get_profile("3")
    assert [call for call, _, _ in timing_out.calls] == ["get"]


def test_a_ping_that_finds_no_node_does_not_refuse_lookups_that_are_answered():
    """On a busy machine a ping can time out on every node while gets are answered: the gets
    answered since then keep lookups going (a ping with none refuses them)."""
    store = make_store(profiles=FakeCollection(dict(PROFILE_DOCS)))
    assert store.get_profile("1") is not None and store.get_profile("404") is None
    store.health.after_ping(set(), {"a:1": "timeout", "b:2": "timeout"})
    assert store.health.healthy
    store.health.after_ping(set(), {"a:1": "timeout", "b:2": "timeout"})  # nothing answered since
    assert not store.health.healthy


# -- least privilege: the service only reads ----------------------------------------------
WRITES = {"upsert", "insert", "replace", "remove", "mutate_in", "touch", "get_and_lock", "unlock"}


def test_the_service_issues_no_write_and_no_ddl():
    """What a read-only user (docs/data-model.md) may do is all the service does at the SDK
    boundary: every lookup, the token's re-read, readiness, a node lost (every copy asked), the
    direct calls' check and the probe of a lost node's token are key-value gets, and every
    statement is a SELECT. The fakes record every call, writes included (upsert_multi)."""
    scope = FakeScope(rows=[["user_data:1", 1]])
    auth = FakeCollection(dict(TOKEN_DOC))
    store = make_store(scope, FakeCollection(dict(PROFILE_DOCS)), auth)
    store.collections["user_images"].docs = {"user_images:1": b'{"record_id":1}'}
    calls: list = []
    store.direct.unchecked = fake_core({**PROFILE_DOCS, **TOKEN_DOC}, calls)
    store._check_direct()
    for degraded in (False, True):
        store.health.degraded = degraded
        store.get_profile("1"), store.get_image("1"), store.get_profile("404")
        store.find_by_nickname("x", FIRST_PAGE, 10), store.find_by_username("y", FIRST_PAGE, 10)
        store.read_token(), store.ping()
    cbsdk.kv_answers(auth, store.layout.token_key, timedelta(seconds=0.5))
    made = {call[0] for collection in store.collections.values() for call in collection.calls}
    assert made <= {"get", "get_any_replica", "get_multi"} and not {w for m in made for w in WRITES if w in m}
    assert {opcode for opcode, _, _ in calls} <= {cbsdk.GET, cbsdk.GET_ANY_REPLICA}
    assert scope.queries and all(statement.startswith("SELECT ") for statement, _ in scope.queries)


def test_only_the_loader_writes_or_defines():
    """The writes and the DDL (upserts, scope, collections, indexes) are the loader's: cbload.py and
    the embedded store's write side, called from loaddata.py; no module the service runs calls them."""
    import re

    from testkit import ROOT

    # cbquery.py declares the loader's index statements beside the lookups' (one place for SQL++);
    # cbload.py runs them.
    writers = {"loaddata.py", "cbload.py", "cbquery.py", "sqlitestore.py", "store.py"}
    for path in ROOT.glob("*.py"):
        if path.name not in writers:
            found = re.search(r"\.(upsert|create_schema|insert|remove)(_multi)?\(|CREATE |DROP ", path.read_text())
            assert found is None, (path.name, found)


# -- why not ready: the cause, in the words of its log line -----------------------------------
@pytest.mark.parametrize(
    "failure, cause",
    [
        (
            cbdns.DnsFailure("DNS: no answer for _couchbases._tcp.cb.x SRV within 2s from 10.0.0.2"),
            "DNS: no answer for _couchbases._tcp.cb.x SRV",
        ),
        (
            cbtls.Refused("TLS: the certificate of n0.cb.x:11207 is refused: Hostname mismatch"),
            "TLS: the certificate of n0.cb.x:11207 is refused: Hostname mismatch",
        ),
        (
            cbtls.Denied("authentication: n0.cb.x refused the credentials of user 'user'"),
            "authentication: n0.cb.x refused the credentials of user 'user'",
        ),
        (
            cbe.AuthenticationException(message="Failed to connect"),
            "authentication: the cluster refused user 'user' (AuthenticationException: Failed to connect)",
        ),
        (
            cbe.UnAmbiguousTimeoutException(message="unambiguous_timeout"),
            "timeout: no key-value node answered in time (UnAmbiguousTimeoutException: unambiguous_timeout)",
        ),
    ],
)
@pytest.mark.parametrize("password", ["x", "password", "timeout", "Ex"])
def test_not_connected_the_store_says_why_as_its_log_line_does(monkeypatch, capsys, failure, cause, password):
    """What /readyz answers (Service.readiness: the store's ping) is the attempt's log line's cause;
    whatever the password, no message holds it or a mask of its letters."""
    store = make_store(connected=False, COUCHBASE_PASSWORD=password)
    with pytest.raises(StoreUnavailable, match="not connected: connecting: the first attempt is under way"):
        store.ping()

    def connect_once():
        store._stop.set()
        store._ping_now.set()
        raise failure

    monkeypatch.setattr(store, "_connect_once", connect_once)
    store._run()
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "(attempt 1)" in line]
    with pytest.raises(StoreUnavailable) as raised:
        store.ping()
    why = str(raised.value)
    # The same words whatever the password: none is masked, since none is in them.
    attempt = "connecting to couchbase://fake (bucket sample_app) failed"
    assert why == f"couchbase: not connected: {attempt}: {cbsdk.cause(failure, 'user')}"
    assert cause in why and why.split("couchbase: not connected: ", 1)[1] in line, (why, line)


def test_connected_with_no_node_answering_the_store_names_each_and_why():
    store = make_store()
    store.health.after_ping(set(), {"10.0.0.1:11210": "timeout", "10.0.0.2:11210": "error: connection refused"})
    with pytest.raises(StoreUnavailable) as raised:
        store.ping()
    assert str(raised.value) == (
        "couchbase: no key-value node answers (10.0.0.1:11210: timeout; 10.0.0.2:11210: error: connection refused)"
    )


def unretrievable(status: str) -> cbe.DocumentUnretrievableException:
    """As SDK 4.6.3 raises it: its context holds each copy's memcached status (1: not found)."""
    context = f"KeyValueErrorContext:{{'key': 'user_data:1', 'opaque': 0, 'status_code': {status}}}"
    return cbe.DocumentUnretrievableException(message="Operation failed", context=context)


def test_every_copy_refusing_at_once_is_no_not_found():
    """Connections refused on every node: the SDK's "unretrievable" comes at once, as a "not found"
    from every copy does. Its context tells them apart: a 503, never a 404 (or a token read as gone)."""
    profiles = FakeCollection(dict(PROFILE_DOCS))
    store = make_store(profiles=profiles, auth=FakeCollection(dict(TOKEN_DOC)))
    store.health.after_ping({"a:1"}, {"b:2": "error: connection refused"})  # every get asks every copy
    profiles.replica_fail = unretrievable("None")
    with pytest.raises(StoreUnavailable) as raised:
        store.get_profile("1")
    assert not isinstance(raised.value, StoreTimeout) and "no copy of user_data:1 answered" in str(raised.value)
    profiles.replica_fail = unretrievable("1")
    assert store.get_profile("1") is None
    assert cbsdk.every_copy_missing(cbe.DocumentUnretrievableException()) is None  # no context: the timing decides


def test_the_loaders_check_of_existing_keys_counts_as_an_answer():
    """As its writes do (above): the token read after the check is not refused by a ping that
    lists only a node still bootstrapping."""

    class Exists:
        def __init__(self, exists: bool):
            self.exists = exists

    profiles = FakeCollection()
    profiles.exists_multi = lambda keys: MultiResult({k: Exists(k == "user_data:2") for k in keys}, {})  # type: ignore[attr-defined]
    store = make_store(profiles=profiles, auth=FakeCollection(dict(TOKEN_DOC)))
    store.health.after_ping(set(), {"127.0.0.1:11210": "error: Bootstrap incomplete, cannot perform ping."})
    assert store.existing("user_data", ["user_data:1", "user_data:2", "user_data:3"]) == 1
    store.health.after_ping(set(), {"127.0.0.1:11210": "error: Bootstrap incomplete, cannot perform ping."})
    assert store.read_token() == "t-1"
