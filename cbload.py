"""The Couchbase store's write side, for loaddata.py: the scope, collections and
indexes, upserts in batches, and a count of documents."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from couchbase import exceptions as cbe
from couchbase.options import QueryOptions

from cbhealth import NodeHealth
from cbquery import Statements
from cbsdk import TIMEOUTS, describe, mapped, query_error_code
from logs import log
from store import Layout, StoreUnavailable, encode_doc

# The query engine's "operation not supported" to CREATE INDEX: a datastore without indexes
# (cbq-engine over files, as the tests run it). The statement was parsed before it was refused.
NO_INDEXES = 15010


class Loading:
    """Mixed into ``cbconn.CouchbaseStore``: the methods ``store.Store`` has for loaddata.py.
    What they use of the store, which sets it:"""

    bucket: Any
    scope: Any
    scope_name: str
    layout: Layout
    sql: Statements
    collections: dict
    connect_timeout: timedelta
    query_timeout: timedelta
    mgmt_timeout: timedelta
    wait_connected: Callable[[float], None]
    health: NodeHealth

    def create_schema(self) -> None:
        """Scope and collections when missing, then the two indexes when there is a query service."""
        self.wait_connected(2 * self.connect_timeout.total_seconds())
        manager = self.bucket.collections()
        try:
            scopes = {s.name: {c.name for c in s.collections} for s in manager.get_all_scopes()}
            if self.scope_name not in scopes:
                self._ignore_exists(manager.create_scope, self.scope_name)
            for name in self.layout.all:
                if name not in scopes.get(self.scope_name, ()):
                    self._ignore_exists(manager.create_collection, self.scope_name, name)
        except Exception as exc:
            raise mapped(exc) from exc
        # One key-value round trip before the loader's first read: the pings of a store that has just
        # connected can list only nodes still bootstrapping, and only an answer keeps it from refusing.
        with contextlib.suppress(StoreUnavailable):  # then the read that follows says why
            self.existing(self.layout.auth, [self.layout.token_key])
        refused = []
        for statement in self.sql.indexes:
            try:
                self.scope.query(statement, QueryOptions(timeout=self.mgmt_timeout)).execute()
            except Exception as exc:
                if query_error_code(exc) == NO_INDEXES:
                    refused.append(statement)  # parsed by the engine, refused by its datastore: go on
                    continue
                # CAVES, or a cluster without the query service: the key-value data is still
                # worth loading; only the nickname and username lookups need these indexes.
                log(
                    f"couchbase: could not create the indexes ({describe(exc)}): the cluster has no query "
                    "service, or it refused; nickname and username lookups need them: " + "; ".join(self.sql.indexes)
                )
                return
        if refused:
            log(
                f"couchbase: warning: the query service cannot create indexes (error {NO_INDEXES}: its datastore "
                "has none, as a file datastore); it parsed these, and lookups scan every profile without them: "
                + "; ".join(refused)
            )

    @staticmethod
    def _ignore_exists(create: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(cbe.ScopeAlreadyExistsException, cbe.CollectionAlreadyExistsException):
            create(*args)  # an "already exists": another loader got there first

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
            # A node answered: a ping that lists only a node still bootstrapping (as one
            # can, just after connecting) is no reason to refuse the loader's next call.
            self.health.answered = True
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
            rows = self.scope.query(self.sql.count[collection], QueryOptions(timeout=self.query_timeout)).rows()
            return int(next(iter(rows), 0))
        except TIMEOUTS as exc:
            raise mapped(exc) from exc
        except cbe.CouchbaseException as exc:
            log(f"couchbase: cannot count {collection} ({describe(exc)}); looking for its id 1 instead")
        try:
            return int(self.collections[collection].exists(f"{collection}:1").exists)
        except Exception as exc:
            raise mapped(exc) from exc

    def existing(self, collection: str, keys: list[str]) -> int:
        """How many of the keys exist: one batch of key-value lookups (no query service needed),
        tried once more when it fails, as a batch of upserts is (just after the collections were
        made, a busy cluster may not answer the first in time)."""
        self.wait_connected(self.connect_timeout.total_seconds())
        for attempt in (1, 2):
            try:
                result = self.collections[collection].exists_multi(keys)
                if result.exceptions:
                    raise next(iter(result.exceptions.values()))
                break
            except Exception as exc:
                if attempt == 2:
                    raise mapped(exc) from exc
        self.health.answered = True  # as for upsert: a node answered, whatever a ping just after connecting lists
        return sum(1 for found in result.results.values() if found.exists)
