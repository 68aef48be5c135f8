"""cbconn at the SDK boundary, in-process: the SQL++ path CAVES cannot run, error
mapping and connection strings (a start-up that does not wait for an absent
cluster, over a real socket: test_cbconn_socket.py).

The fakes below stand in for the SDK's scope and collection objects only; what
cbconn hands them (statement text, options) is what the SDK would send.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from couchbase import exceptions as cbe
from couchbase.transcoder import RawJSONTranscoder

import cbconn
import settings
from store import StoreTimeout, StoreUnavailable

pytestmark = pytest.mark.inprocess


class Row:
    def __init__(self, value: bytes):
        self.value = value


class MultiResult:
    def __init__(self, results: dict, exceptions: dict):
        self.results, self.exceptions = results, exceptions
        self.all_ok = not exceptions


class FakeCollection:
    """Stored raw bytes by key; ``fail`` makes every call raise it."""

    def __init__(self, docs: dict[str, bytes] | None = None, fail: Exception | None = None):
        self.docs = docs or {}
        self.fail = fail
        self.calls: list[tuple] = []

    def get(self, key, *options):
        self.calls.append(("get", key, options))
        if self.fail:
            raise self.fail
        if key not in self.docs:
            raise cbe.DocumentNotFoundException()
        return Row(self.docs[key])

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


def make_store(scope=None, profiles=None, auth=None, connected=True, healthy=True):
    store = cbconn.CouchbaseStore(settings.defaults({
        "COUCHBASE_HOST": "couchbase://fake", "COUCHBASE_USER": "user", "COUCHBASE_PASSWORD": "pw",
        "COUCHBASE_KV_TIMEOUT": "1.5", "COUCHBASE_QUERY_TIMEOUT": "3"}))
    store.scope = scope or FakeScope()
    store.collections = {"user_data": profiles or FakeCollection(), "user_images": FakeCollection(),
                         "service_auth": auth or FakeCollection()}
    if connected:
        store._connected.set()
    store._healthy = healthy
    return store


# -- the query path --------------------------------------------------------------
def test_nickname_is_a_prepared_query_with_a_named_parameter():
    nickname = "o'brien\" OR 1=1 --"
    scope = FakeScope(rows=["user_data:7", "user_data:2"])
    profiles = FakeCollection({"user_data:7": b'{"record_id":7}', "user_data:2": b'{"record_id":2}'})
    store = make_store(scope, profiles)

    assert store.find_by_nickname(nickname) == [b'{"record_id":7}', b'{"record_id":2}']  # query order

    (statement, options), = scope.queries
    assert statement == "SELECT RAW META().id FROM user_data WHERE nickname = $nickname ORDER BY record_id"
    assert nickname not in statement
    assert options["named_parameters"] == {"nickname": nickname}
    assert options["adhoc"] is False
    assert options["timeout"] == timedelta(seconds=3)
    # No options per call: the cluster's transcoder and kv timeout (test_cluster_options).
    assert profiles.calls == [("get_multi", ["user_data:7", "user_data:2"], ())]


def test_username_is_a_prepared_query_with_a_named_parameter():
    scope = FakeScope(rows=["user_data:3"])
    store = make_store(scope, FakeCollection({"user_data:3": b'{"user_id":"jsmith3"}'}))
    assert store.find_by_username("jsmith3") == [b'{"user_id":"jsmith3"}']
    (statement, options), = scope.queries
    assert statement == "SELECT RAW META().id FROM user_data WHERE user_id = $username"
    assert options["named_parameters"] == {"username": "jsmith3"}
    assert options["adhoc"] is False


def test_no_match_makes_no_key_value_call():
    profiles = FakeCollection()
    assert make_store(FakeScope(rows=[]), profiles).find_by_nickname("nobody") == []
    assert profiles.calls == []


def test_a_document_deleted_since_the_query_is_skipped():
    scope = FakeScope(rows=["user_data:1", "user_data:2"])
    store = make_store(scope, FakeCollection({"user_data:2": b"{}"}))
    assert store.find_by_nickname("x") == [b"{}"]


@pytest.mark.parametrize("error, expected", [
    (cbe.UnAmbiguousTimeoutException(message="timeout"), StoreTimeout),
    (cbe.AmbiguousTimeoutException(message="timeout"), StoreTimeout),
    (cbe.ServiceUnavailableException(message="no query node"), StoreUnavailable),
    (cbe.InternalServerFailureException(message="Streaming operation failed"), StoreUnavailable),
    (cbe.TemporaryFailException(message="overloaded"), StoreUnavailable),
    (cbe.RequestCanceledException(message="closed"), StoreUnavailable),
])
def test_query_errors_map_to_store_errors(error, expected):
    store = make_store(FakeScope(fail=error))
    with pytest.raises(expected) as raised:
        store.find_by_nickname("x")
    assert type(error).__name__ in str(raised.value)
    if expected is StoreUnavailable:
        assert not isinstance(raised.value, StoreTimeout)


def test_a_failing_fetch_after_the_query_is_a_store_error():
    failing = FakeCollection(fail=cbe.UnAmbiguousTimeoutException())
    store = make_store(FakeScope(rows=["user_data:1"]), failing)
    with pytest.raises(StoreTimeout):
        store.find_by_username("x")


# -- key-value path ----------------------------------------------------------------
def test_key_value_gets_and_their_errors():
    profiles = FakeCollection({"user_data:1": b'{"a":1}'})
    store = make_store(profiles=profiles)
    assert store.get_profile("1") == b'{"a":1}'
    assert store.get_profile("2") is None
    assert store.get_profile("9" * 300) is None  # longer than any Couchbase key: not asked
    assert profiles.calls == [("get", "user_data:1", ()), ("get", "user_data:2", ())]
    profiles.fail = cbe.AmbiguousTimeoutException()
    with pytest.raises(StoreTimeout):
        store.get_profile("1")
    profiles.fail = cbe.TemporaryFailException()
    with pytest.raises(StoreUnavailable):
        store.get_profile("1")


def test_without_the_sdks_internals_gets_take_the_public_path():
    """core_get finds nothing on an object that is not a 4.6 collection; the store then calls
    Collection.get, as with every fake here (the direct path runs against CAVES: test_caves.py)."""
    assert cbconn.core_get(FakeCollection()) is None
    assert make_store()._core_get is None


def test_token_lookup_maps_missing_document_and_path_to_none():
    class Auth(FakeCollection):
        def lookup_in(self, key, specs, *options):
            raise self.fail

    store = make_store(auth=Auth(fail=cbe.DocumentNotFoundException()))
    assert store.read_token() is None
    store.collections["service_auth"].fail = cbe.PathNotFoundException()
    assert store.read_token() is None
    store.collections["service_auth"].fail = cbe.UnAmbiguousTimeoutException()
    with pytest.raises(StoreTimeout):
        store.read_token()


def test_not_connected_or_unhealthy_fails_at_once():
    for store in (make_store(connected=False), make_store(healthy=False)):
        for call, args in ((store.get_profile, ("1",)), (store.find_by_nickname, ("x",)),
                           (store.read_token, ()), (store.ping, ())):
            with pytest.raises(StoreUnavailable):
                call(*args)
        assert store.scope.queries == []


# -- configuration -------------------------------------------------------------------
@pytest.mark.parametrize("env, expected", [
    ({"COUCHBASE_HOST": "db.example.com"}, "couchbase://db.example.com"),
    ({"COUCHBASE_HOST": "db.example.com", "COUCHBASE_TLS": "true"}, "couchbases://db.example.com"),
    ({"COUCHBASE_HOST": "cb.svc", "COUCHBASE_NETWORK": "external"}, "couchbase://cb.svc?network=external"),
    ({"COUCHBASE_HOST": "cb.svc", "COUCHBASE_NETWORK": "default"}, "couchbase://cb.svc"),
    ({"COUCHBASE_HOST": "a,b", "COUCHBASE_TLS": "1", "COUCHBASE_NETWORK": "external"},
     "couchbases://a,b?network=external"),
    # A full connection string is used as it is, whatever the other variables say.
    ({"COUCHBASE_HOST": "couchbases://x.cloud.couchbase.com?ssl=no_verify", "COUCHBASE_TLS": "false",
      "COUCHBASE_NETWORK": "external"}, "couchbases://x.cloud.couchbase.com?ssl=no_verify"),
    ({"COUCHBASE_HOST": "couchbase://127.0.0.1:11210"}, "couchbase://127.0.0.1:11210"),
])
def test_connection_string(env, expected):
    assert cbconn.connection_string(settings.defaults(env)) == expected


def test_environment_defaults_and_timeouts(monkeypatch):
    started = []
    monkeypatch.setattr(cbconn.CouchbaseStore, "start", lambda self: started.append(self))  # no connecting
    s = cbconn.CouchbaseStore.from_environ({"COUCHBASE_HOST": "h", "COUCHBASE_KV_TIMEOUT": "0.75",
                                            "COUCHBASE_QUERY_TIMEOUT": "4"})
    assert started == [s]
    assert (s.bucket_name, s.scope_name) == ("sample_app", "profiles")
    assert s.kv_timeout == timedelta(seconds=0.75) and s.query_timeout == timedelta(seconds=4)
    assert s.connect_timeout == timedelta(seconds=10)


def test_cluster_options(monkeypatch):
    """What the key-value calls no longer pass is set once on the cluster; SDK observability
    is off unless asked for (its effect on a connected cluster: test_caves.py)."""
    monkeypatch.setattr(cbconn.CouchbaseStore, "start", lambda self: None)  # no connecting
    env = {"COUCHBASE_HOST": "h", "COUCHBASE_KV_TIMEOUT": "0.75"}
    for setting, expected in ((None, False), ("true", True), ("1", True), ("false", False), ("off", False)):
        store = cbconn.CouchbaseStore.from_environ(
            env if setting is None else {**env, "COUCHBASE_SDK_OBSERVABILITY": setting})
        options = store._options()
        assert isinstance(options["transcoder"], RawJSONTranscoder)  # stored bytes, not re-encoded JSON
        assert options["kv_timeout"] == timedelta(seconds=0.75)
        assert (options["enable_tracing"], options["enable_metrics"]) == (expected, expected), setting
