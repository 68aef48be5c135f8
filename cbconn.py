"""The Couchbase store: the official Python SDK (4.x) behind ``store.Store``.

Start-up never blocks: ``from_options`` returns at once and a background
thread connects, retrying with capped exponential backoff, then keeps pinging
the key-value service. Until connected, and while no key-value node answers a
ping, every lookup raises ``StoreUnavailable`` at once; otherwise every SDK call
ends within the cluster's timeout for its service, so nothing waits past it.

Documents are written and read as raw JSON bytes (``RawJSONTranscoder``) made
by ``store.encode_doc``, so the service sends exactly the bytes the embedded
store would. The transcoder and the timeouts are set once, on the cluster,
so a call passes no options; a get calls the SDK's C++ get directly
(``core_get``); and the SDK's tracing and metrics are off unless
COUCHBASE_SDK_OBSERVABILITY asks for them (they cost CPU on every operation).

Nickname and username lookups are prepared SQL++ statements with named
parameters that return document keys (``SELECT RAW META().id``); the documents
themselves are then key-value gets, because the query service re-serialises
JSON (its own key order) and the bytes would not be the stored ones.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from datetime import timedelta
from typing import Any

from couchbase import exceptions as cbe
from couchbase import subdocument
from couchbase.auth import PasswordAuthenticator
from couchbase.cluster import Cluster
from couchbase.diagnostics import PingState, ServiceType
from couchbase.options import (
    ClusterOptions,
    ClusterTimeoutOptions,
    PingOptions,
    QueryOptions,
    WaitUntilReadyOptions,
)
from couchbase.transcoder import RawJSONTranscoder

try:  # the SDK's own C++ get, under its Python wrapper: see core_get
    from couchbase.exceptions import ErrorMapper
    from couchbase.logic.operation_types import KeyValueOperationCode
    from couchbase.logic.pycbc_core import pycbc_exception, pycbc_kv_request

    GET = KeyValueOperationCode.Get.value
except ImportError:  # another SDK's layout: the public get only
    pycbc_kv_request = None

import settings
from store import (
    AUTH,
    COLLECTIONS,
    IMAGES,
    MAX_KEY_BYTES,
    PROFILES,
    TOKEN_KEY,
    Store,
    StoreTimeout,
    StoreUnavailable,
    encode_doc,
)

RAW = RawJSONTranscoder()
TIMEOUTS = (cbe.TimeoutException, cbe.AmbiguousTimeoutException, cbe.UnAmbiguousTimeoutException)

# Keys, not documents: see the module docstring. Scope-level queries, so the
# statements name only the collection; record_id orders the nickname matches
# as the embedded store does.
BY_NICKNAME = f"SELECT RAW META().id FROM {PROFILES} WHERE nickname = $nickname ORDER BY record_id"  # nosec B608  # a constant collection; $nickname is a named parameter
BY_USERNAME = f"SELECT RAW META().id FROM {PROFILES} WHERE user_id = $username"  # nosec B608  # a constant collection; $username is a named parameter
# Written out: a collection name cannot be a query parameter.
COUNT = {
    "user_data": "SELECT RAW COUNT(*) FROM user_data",
    "user_images": "SELECT RAW COUNT(*) FROM user_images",
    "service_auth": "SELECT RAW COUNT(*) FROM service_auth",
}
# Both cover their lookup (META().id is in every index), so no document fetch by the query service.
INDEXES = (
    f"CREATE INDEX IF NOT EXISTS {PROFILES}_nickname ON {PROFILES}(nickname, record_id)",
    f"CREATE INDEX IF NOT EXISTS {PROFILES}_user_id ON {PROFILES}(user_id)",
)

def core_get(collection):
    """The C++ get under ``Collection.get``, or None when the SDK is not laid out as 4.6's is.

    Per call ``Collection.get`` merges options, opens an observability handler and
    wraps the answer in a result object, none of which the service uses: about 4 us
    of CPU of the ~45 a get costs at 32 threads (bench/sdk_micro.py: store, sdk-core).
    These are the SDK's internals, not its API; without them the public get is used.
    """
    if pycbc_kv_request is None:
        return None
    try:
        return collection._impl._client_adapter.connection.pycbc_get
    except AttributeError:
        return None


def connection_string(options) -> str:
    """The configured host as a connection string: a full one is used as it is."""
    host = options.couchbase_host.strip()
    if "://" in host:
        return host
    connstr = f"{'couchbases' if options.couchbase_tls else 'couchbase'}://{host}"
    network = options.couchbase_network.strip()
    if network and network != "default":
        connstr += f"{'&' if '?' in host else '?'}network={network}"
    return connstr


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def describe(exc: BaseException) -> str:
    """One short line for an SDK error: its class and the core's message, not its whole context."""
    found = re.search(r"message=([^,>]+)", str(exc))
    detail = found.group(1).strip() if found else str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def mapped(exc: Exception) -> StoreUnavailable:
    """An SDK error as the store error the handler turns into 503 or 504."""
    if isinstance(exc, TIMEOUTS):
        return StoreTimeout(f"couchbase: {describe(exc)}")
    return StoreUnavailable(f"couchbase: {describe(exc)}")


class CouchbaseStore(Store):
    def __init__(self, options):
        """Configured from the ``couchbase_*`` settings (settings.py); ``start()`` connects."""
        self.connstr = connection_string(options)
        self.bucket_name, self.scope_name = options.couchbase_bucket, options.couchbase_scope
        self._auth = PasswordAuthenticator(options.couchbase_user, options.couchbase_password)
        self._password = options.couchbase_password  # only to keep it out of log lines
        self.kv_timeout = timedelta(seconds=options.couchbase_kv_timeout)
        self.query_timeout = timedelta(seconds=options.couchbase_query_timeout)
        self.connect_timeout = timedelta(seconds=options.couchbase_connect_timeout)
        self.mgmt_timeout = timedelta(seconds=options.couchbase_mgmt_timeout)
        self.retry_max = options.couchbase_retry_max
        self.health_interval = options.couchbase_health_interval
        self.observability = options.couchbase_sdk_observability
        # The SDK's objects once connected, None before (the SDK ships no type hints).
        self.cluster: Any = None
        self.bucket: Any = None
        self.scope: Any = None
        self.collections: dict = {}
        self._core_get = None
        self._connected = threading.Event()
        self._healthy = False  # the last key-value ping had an answering node
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_options(cls, options) -> CouchbaseStore:
        """Connecting starts in the background, and this returns at once."""
        store = cls(options)
        store.start()
        return store

    @classmethod
    def from_environ(cls, environ) -> CouchbaseStore:
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
        return ClusterOptions(
            self._auth, transcoder=RAW,
            enable_tracing=self.observability, enable_metrics=self.observability,
            timeout_options=ClusterTimeoutOptions(
                kv_timeout=self.kv_timeout, query_timeout=self.query_timeout,
                connect_timeout=self.connect_timeout, bootstrap_timeout=self.connect_timeout,
                management_timeout=self.mgmt_timeout,
            ))

    def _connect_once(self) -> None:
        cluster = Cluster(self.connstr, self._options())  # blocks up to the bootstrap timeout
        try:
            bucket = cluster.bucket(self.bucket_name)
            cluster.wait_until_ready(self.connect_timeout, WaitUntilReadyOptions(
                service_types=[ServiceType.KeyValue]))
        except Exception:
            cluster.close()
            raise
        if self._stop.is_set():  # closed while connecting
            cluster.close()
            return
        scope = bucket.scope(self.scope_name)
        self.cluster, self.bucket, self.scope = cluster, bucket, scope
        self.collections = {name: scope.collection(name) for name in COLLECTIONS}
        # With observability on, every get goes through the wrapper, which records it.
        self._core_get = None if self.observability else core_get(self.collections[PROFILES])
        self._healthy = True
        self._connected.set()

    def _run(self) -> None:
        delay, attempt = 0.5, 0
        while not self._stop.is_set() and not self._connected.is_set():
            attempt += 1
            try:
                self._connect_once()
                if not self._connected.is_set():
                    return
                log(f"couchbase: connected to {self.connstr}, bucket {self.bucket_name}, "
                    f"scope {self.scope_name}")
            except Exception as exc:  # every failure is retried: the cluster may come up later
                line = (f"couchbase: connecting to {self.connstr} (bucket {self.bucket_name}) failed "
                        f"(attempt {attempt}): {describe(exc)}")
                if self._password:
                    line = line.replace(self._password, "***")
                log(f"{line}; retrying in {delay:g}s")
                self._stop.wait(delay)
                delay = min(delay * 2, self.retry_max)
        # Connected: watch the key-value service so that lookups fail fast while
        # no node answers (a killed cluster refuses at once, but the SDK would
        # queue each get until its timeout), and resume as soon as one does.
        while not self._stop.wait(self.health_interval):
            healthy = self._ping()
            if healthy != self._healthy:
                log(f"couchbase: key-value service {'answers again' if healthy else 'is not answering'}")
            self._healthy = healthy

    def _ping(self) -> bool:
        # A short timeout: a node that takes half a second to answer a ping is in
        # trouble, and failing fast then spares every request its full kv timeout.
        try:
            timeout = min(self.kv_timeout, timedelta(seconds=0.5))
            kv_only = PingOptions(service_types=[ServiceType.KeyValue], timeout=timeout)
            result = self.bucket.ping(kv_only)
        except Exception:
            return False
        return any(r.state == PingState.OK for rs in result.endpoints.values() for r in rs)

    def wait_connected(self, timeout: float) -> None:
        """Block until connected; StoreUnavailable after ``timeout`` seconds."""
        if not self._connected.wait(timeout):
            raise StoreUnavailable(f"couchbase: not connected to {self.connstr} after {timeout:g}s")

    def _collection(self, name: str):
        if not self._connected.is_set():
            raise StoreUnavailable("couchbase: not connected yet")
        if not self._healthy:
            raise StoreUnavailable("couchbase: no key-value node answers")
        return self.collections[name]

    # -- read side -----------------------------------------------------------
    def _get(self, collection: str, record_id: str) -> bytes | None:
        key = f"{collection}:{record_id}"
        if len(key.encode()) > MAX_KEY_BYTES:
            return None  # Couchbase refuses such a key: it cannot exist
        coll = self._collection(collection)
        try:
            if self._core_get is None:
                return coll.get(key).value  # the cluster's transcoder and kv timeout
            # What Collection.get does with no options (the cluster's kv timeout), minus the wrapper.
            request = pycbc_kv_request()
            request.opcode = GET
            request.bucket, request.scope, request.collection, request.key = (
                self.bucket_name, self.scope_name, collection, key)
            found = self._core_get(request)
            if isinstance(found, pycbc_exception):
                raise ErrorMapper.build_exception(found)
            return RAW.decode_value(found.raw_result["value"], found.raw_result["flags"])
        except cbe.DocumentNotFoundException:
            return None
        except Exception as exc:
            raise mapped(exc) from exc

    def get_profile(self, record_id: str) -> bytes | None:
        return self._get(PROFILES, record_id)

    def get_image(self, record_id: str) -> bytes | None:
        return self._get(IMAGES, record_id)

    def _find(self, statement: str, params: dict) -> list[bytes]:
        coll = self._collection(PROFILES)
        try:
            keys = list(self.scope.query(statement, QueryOptions(
                named_parameters=params, adhoc=False, timeout=self.query_timeout)).rows())
            if not keys:
                return []
            found = coll.get_multi(keys)
        except Exception as exc:
            raise mapped(exc) from exc
        for error in (found.exceptions or {}).values():
            if not isinstance(error, cbe.DocumentNotFoundException):  # deleted since the query: skip it
                raise mapped(error) from error
        # In query order (record_id), which get_multi's dict does not promise.
        return [found.results[key].value for key in keys if key in found.results]

    def find_by_nickname(self, nickname: str) -> list[bytes]:
        return self._find(BY_NICKNAME, {"nickname": nickname})

    def find_by_username(self, username: str) -> list[bytes]:
        return self._find(BY_USERNAME, {"username": username})

    def read_token(self) -> str | None:
        coll = self._collection(AUTH)
        try:
            result = coll.lookup_in(TOKEN_KEY, [subdocument.get("token")])
            # The cluster's raw transcoder decodes sub-document values too: JSON text here.
            token = json.loads(result.content_as[bytes](0))
        except (cbe.DocumentNotFoundException, cbe.PathNotFoundException):
            return None
        except Exception as exc:
            raise mapped(exc) from exc
        return token if isinstance(token, str) and token else None

    def ping(self) -> None:
        """What the background pings last found: answers at once, for /readyz."""
        self._collection(AUTH)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # Not for long: a connection attempt in progress ends by itself (daemon thread).
            self._thread.join(1)
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        self._connected.clear()

    # -- write side: loaddata.py ---------------------------------------------
    def create_schema(self) -> None:
        """Scope and collections when missing, then the two indexes when there is a query service."""
        self.wait_connected(2 * self.connect_timeout.total_seconds())
        manager = self.bucket.collections()
        try:
            scopes = {s.name: {c.name for c in s.collections} for s in manager.get_all_scopes()}
            if self.scope_name not in scopes:
                self._ignore_exists(manager.create_scope, self.scope_name)
            for name in COLLECTIONS:
                if name not in scopes.get(self.scope_name, ()):
                    self._ignore_exists(manager.create_collection, self.scope_name, name)
        except Exception as exc:
            raise mapped(exc) from exc
        for statement in INDEXES:
            try:
                self.scope.query(statement, QueryOptions(timeout=self.mgmt_timeout)).execute()
            except Exception as exc:
                # CAVES, or a cluster without the query service: the key-value data is still
                # worth loading; only the nickname and username lookups need these indexes.
                log(f"couchbase: could not create the indexes ({describe(exc)}): the cluster has no "
                    "query service, or it refused; nickname and username lookups need them: "
                    + "; ".join(INDEXES))
                return

    @staticmethod
    def _ignore_exists(create, *args) -> None:
        try:
            create(*args)
        except (cbe.ScopeAlreadyExistsException, cbe.CollectionAlreadyExistsException):
            pass  # another loader got there first

    def upsert(self, collection: str, docs: list[tuple[str, dict]]) -> None:
        """One batch, sent concurrently by the SDK; failed keys are tried once more."""
        if not docs:
            return
        self.wait_connected(self.connect_timeout.total_seconds())
        coll = self.collections[collection]
        pending = {key: encode_doc(doc) for key, doc in docs}
        for attempt in (1, 2):
            try:
                result = coll.upsert_multi(pending)
            except Exception as exc:
                raise mapped(exc) from exc
            failed = result.exceptions or {}
            if not failed:
                return
            if attempt == 2:
                error = next(iter(failed.values()))
                raise mapped(error) from error
            pending = {key: pending[key] for key in failed}

    def count(self, collection: str) -> int:
        """How many documents: a SQL++ count. Without a query service (CAVES) it cannot be
        counted, and this answers 1 when the document of id 1 exists, else 0: enough for
        ``loaddata.py --if-empty``, which only asks whether there is anything."""
        self.wait_connected(self.connect_timeout.total_seconds())
        try:
            rows = self.scope.query(COUNT[collection],
                                    QueryOptions(timeout=self.query_timeout)).rows()
            return int(next(iter(rows), 0))
        except TIMEOUTS as exc:
            raise mapped(exc) from exc
        except cbe.CouchbaseException as exc:
            log(f"couchbase: cannot count {collection} ({describe(exc)}); looking for its id 1 instead")
        try:
            return int(self.collections[collection].exists(f"{collection}:1").exists)
        except Exception as exc:
            raise mapped(exc) from exc
