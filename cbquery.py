"""The Couchbase store's SQL++: a page of the profiles of a nickname or a username, and the
statements the loader runs (indexes, counts), for the collections' names of the settings.

A lookup is a prepared statement with named parameters that returns each match's key and
record_id (``SELECT RAW [META().id, record_id]``), never the documents: those are then one
key-value multi-get, because the query service re-serialises JSON (its own key order) and the
bytes would not be the stored ones.

Keyset paging: a page is ``record_id > $after ORDER BY record_id LIMIT $limit``, asking one
row more than the page to know whether another follows. The index ``(nickname, record_id)``
(``(user_id, record_id)``) holds the matches in that order and covers the statement (META().id
is in every index), so the engine reads the page's keys from the index, from ``after`` on,
without fetching or sorting every match: a page costs the same at any depth, and a profile
added during a walk is neither skipped nor repeated.

``QueryWatch`` bounds every lookup: SDK 4.6.3 never answers a statement it has to re-prepare
(a query node restarted and answers error 4040 "no such prepared statement": its C++ core
sends the PREPARE again but has already dropped the request's callback, and its Python side
waits for the rows without a deadline). The watch cancels a lookup still unanswered a moment
after COUCHBASE_QUERY_TIMEOUT, a 504; the statement is prepared again by then, and the next
lookups are answered.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from couchbase import exceptions as cbe
from couchbase.options import QueryOptions

from cbsdk import mapped
from logs import log
from store import Layout, Page, StoreTimeout, page_of

# After the query timeout, the SDK's own timeout error is the better answer: the watch waits this much more.
WATCH_GRACE = 0.5
WATCH_INTERVAL = 0.25


class Statements:
    """The SQL++ of one set of names. Scope-level queries (the SDK sends the scope as the query
    context), so a statement names only the collection, quoted: a name cannot be a parameter."""

    def __init__(self, layout: Layout) -> None:
        p = f"`{layout.profiles}`"
        page = "AND record_id > $after ORDER BY record_id LIMIT $limit"
        self.by_nickname = f"SELECT RAW [META().id, record_id] FROM {p} WHERE nickname = $nickname {page}"  # nosec B608  # a quoted name of the settings; the values are named parameters
        self.by_username = f"SELECT RAW [META().id, record_id] FROM {p} WHERE user_id = $username {page}"  # nosec B608  # a quoted name of the settings; the values are named parameters
        self.indexes = (
            f"CREATE INDEX `{layout.profiles}_nickname` IF NOT EXISTS ON {p}(nickname, record_id)",
            f"CREATE INDEX `{layout.profiles}_user_id_record_id` IF NOT EXISTS ON {p}(user_id, record_id)",
        )
        self.count = {name: f"SELECT RAW COUNT(*) FROM `{name}`" for name in layout.all}  # nosec B608  # quoted names of the settings


class QueryWatch:
    """The lookups in flight and their deadlines; a thread (started with the first lookup)
    cancels the SDK's wait for the rows of one past its deadline (see the module docstring)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds + WATCH_GRACE
        self._flying: dict[int, tuple[float, Any]] = {}  # id -> (deadline, the SDK's stream of rows)
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, result: Any) -> tuple[int, Any]:
        """Watch a query the SDK has sent; None as its stream when this SDK has no way to cancel it."""
        stream = getattr(getattr(result, "_request", None), "_streaming_result", None)
        if not hasattr(stream, "cancel"):
            return -1, None
        watched = next(self._ids)
        with self._lock:
            self._flying[watched] = (time.monotonic() + self.seconds, stream)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="couchbase-query-watch", daemon=True)
                self._thread.start()
        return watched, stream

    def end(self, watched: int, stream: Any) -> None:
        """The query is over; StoreTimeout if it was the watch that ended it."""
        with self._lock:
            self._flying.pop(watched, None)
        if stream is not None and stream.is_cancelled():
            raise StoreTimeout(f"couchbase: the SDK did not answer a query within {self.seconds:g}s: cancelled")

    def _run(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL):
            now = time.monotonic()
            with self._lock:
                late = [stream for deadline, stream in self._flying.values() if deadline < now]
            for stream in late:
                if not stream.is_cancelled():
                    stream.cancel()
                    log("couchbase: a query had no answer from the SDK past its timeout; cancelled (504)")

    def close(self) -> None:
        self._stop.set()


class Querying:
    """Mixed into ``cbconn.CouchbaseStore``: the two lookups of ``store.Store`` that are SQL++.
    What they use of the store, which sets it:"""

    scope: Any
    layout: Layout
    sql: Statements
    query_timeout: timedelta
    query_watch: QueryWatch
    _collection: Callable[[str], Any]

    def _find(self, statement: str, params: dict, after: int, limit: int) -> Page:
        coll = self._collection(self.layout.profiles)
        options = QueryOptions(
            named_parameters={**params, "after": after, "limit": limit + 1}, adhoc=False, timeout=self.query_timeout
        )
        watched, stream = -1, None
        try:
            result = self.scope.query(statement, options)
            found_rows = iter(result.rows())  # sends it
            watched, stream = self.query_watch.start(result)
            rows = [(record_id, key) for key, record_id in found_rows]
            self.query_watch.end(watched, stream)
            keys, after_last = page_of(rows, limit)
            if not keys:
                return [], None
            found = coll.get_multi(keys)
        except StoreTimeout:
            raise
        except Exception as exc:
            self.query_watch.end(watched, stream)  # a cancelled query raises the SDK's own error first
            raise mapped(exc) from exc
        for error in (found.exceptions or {}).values():
            if not isinstance(error, cbe.DocumentNotFoundException):  # deleted since the query: skip it
                raise mapped(error) from error
        # In query order (record_id), which get_multi's dict does not promise.
        docs = [found.results[key].value for key in keys if key in found.results]
        return docs, int(after_last) if after_last is not None else None

    def find_by_nickname(self, nickname: str, after: int, limit: int) -> Page:
        return self._find(self.sql.by_nickname, {"nickname": nickname}, after, limit)

    def find_by_username(self, username: str, after: int, limit: int) -> Page:
        return self._find(self.sql.by_username, {"username": username}, after, limit)
