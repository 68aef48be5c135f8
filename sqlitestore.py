"""The embedded default store: the three collections of the data model in one SQLite file.

Each collection is a table of ``key -> doc``, named as the collection (store.Layout), where
``doc`` is the document's JSON as written; the profiles' table also carries ``nickname``,
``user_id`` and ``record_id`` columns, indexed by ``(nickname, record_id)`` and
``(user_id, record_id)``, so the two lookups that are not by key read a page in order.
"""

from __future__ import annotations

import os
import queue
import sqlite3
from collections.abc import Callable
from typing import Any

from store import MAX_KEY_BYTES, Layout, Page, Store, StoreUnavailable, encode_doc, page_of, token_of


class Statements:
    """The store's SQL for one set of names (the settings'). A table's name cannot be a query
    parameter: the names are quoted, and settings.COLLECTION_NAME lets no quote into them."""

    def __init__(self, layout: Layout) -> None:
        p, images, auth = (f'"{name}"' for name in layout.all)
        self.schema = f"""
CREATE TABLE IF NOT EXISTS {p} (
    key TEXT PRIMARY KEY, doc BLOB NOT NULL, nickname TEXT, user_id TEXT, record_id INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS "{layout.profiles}_nickname" ON {p} (nickname, record_id);
DROP INDEX IF EXISTS "{layout.profiles}_user_id";
CREATE INDEX IF NOT EXISTS "{layout.profiles}_user_id_record_id" ON {p} (user_id, record_id);
CREATE TABLE IF NOT EXISTS {images} (key TEXT PRIMARY KEY, doc BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {auth} (key TEXT PRIMARY KEY, doc BLOB NOT NULL) WITHOUT ROWID;
"""
        quoted = dict(zip(layout.all, (p, images, auth), strict=True))
        self.get = {name: f"SELECT doc FROM {table} WHERE key = ?" for name, table in quoted.items()}  # nosec B608  # quoted names of the settings; the key is a ? parameter
        self.count = {name: f"SELECT count(*) FROM {table}" for name, table in quoted.items()}  # nosec B608  # quoted names of the settings
        # A page: the index (column, record_id) finds the matches in record_id order from `after` on,
        # so a page costs the same at any depth; one more row than the page says whether another follows.
        self.by_nickname = (
            f"SELECT record_id, doc FROM {p} WHERE nickname = ? AND record_id > ? ORDER BY record_id LIMIT ?"  # nosec B608  # a quoted name of the settings; the values are ? parameters
        )
        self.by_username = (
            f"SELECT record_id, doc FROM {p} WHERE user_id = ? AND record_id > ? ORDER BY record_id LIMIT ?"  # nosec B608  # a quoted name of the settings; the values are ? parameters
        )
        self.ping = f"SELECT 1 FROM {auth} LIMIT 1"  # nosec B608  # a quoted name of the settings
        self.insert_profile = f"INSERT OR REPLACE INTO {p} VALUES (?, ?, ?, ?, ?)"  # nosec B608  # a quoted name of the settings
        self.insert = {name: f"INSERT OR REPLACE INTO {table} VALUES (?, ?)" for name, table in quoted.items()}  # nosec B608  # quoted names of the settings


class SQLiteStore(Store):
    """SQLite behind a pool of connections: one per thread that is using it.

    A pool rather than a thread-local: the server starts a thread per client
    connection, and opening SQLite for each would cost more than the lookup.
    """

    serial = True  # a lookup is a few microseconds of CPU in this process

    def __init__(self, path: str, busy_timeout: float, layout: Layout):
        self.path = path
        self.busy_timeout = busy_timeout
        self.layout = layout
        self.sql = Statements(layout)
        self._idle: queue.SimpleQueue[sqlite3.Cursor] = queue.SimpleQueue()
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)

    def __str__(self) -> str:
        return f"embedded SQLite at {self.path}"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-32768")  # 32 MiB: the 10,000-profile demo data stays in memory
        return conn

    def _query(self, sql: str, args: tuple, fetch: Callable[[sqlite3.Cursor], Any] = sqlite3.Cursor.fetchall) -> Any:
        # The pool holds a cursor on each connection: reused, it saves making one per
        # query. Every query is read to its end (a key's one row by fetchone too), so
        # none holds a read transaction open between calls.
        try:
            cursor = self._idle.get_nowait()
        except queue.Empty:
            cursor = None
        try:
            if cursor is None:
                cursor = self._connect().cursor()
            rows = fetch(cursor.execute(sql, args))
        except sqlite3.Error as exc:
            # A locked, missing or broken file: the store is not answering.
            # The connection is dropped rather than pooled, so the next call
            # starts afresh and recovers once the file is healthy again.
            if cursor is not None:
                cursor.connection.close()
            raise StoreUnavailable(f"sqlite: {exc}") from exc
        self._idle.put(cursor)
        return rows

    # -- read side -----------------------------------------------------------
    def _get(self, collection: str, record_id: str) -> bytes | None:
        key = f"{collection}:{record_id}"
        if len(key.encode()) > MAX_KEY_BYTES:
            return None
        row = self._query(self.sql.get[collection], (key,), sqlite3.Cursor.fetchone)  # a key has one row
        return row[0] if row else None

    def get_profile(self, record_id: str) -> bytes | None:
        return self._get(self.layout.profiles, record_id)

    def get_image(self, record_id: str) -> bytes | None:
        return self._get(self.layout.images, record_id)

    def find_by_nickname(self, nickname: str, after: int, limit: int) -> Page:
        return page_of(self._query(self.sql.by_nickname, (nickname, after, limit + 1)), limit)

    def find_by_username(self, username: str, after: int, limit: int) -> Page:
        return page_of(self._query(self.sql.by_username, (username, after, limit + 1)), limit)

    def read_token(self) -> str | None:
        return token_of(self._get(self.layout.auth, "1"))

    def ping(self) -> None:
        self._query(self.sql.ping, ())

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().connection.close()
            except queue.Empty:
                return

    # -- write side ----------------------------------------------------------
    def create_schema(self) -> None:
        conn = self._connect()
        try:
            conn.executescript(self.sql.schema)
        finally:
            conn.close()

    def upsert(self, collection: str, docs: list[tuple[str, dict]]) -> None:
        conn = self._connect()
        try:
            with conn:
                if collection == self.layout.profiles:
                    conn.executemany(
                        self.sql.insert_profile,
                        [(k, encode_doc(d), d.get("nickname"), d.get("user_id"), d.get("record_id")) for k, d in docs],
                    )
                else:
                    conn.executemany(self.sql.insert[collection], [(k, encode_doc(d)) for k, d in docs])
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc
        finally:
            conn.close()

    def existing(self, collection: str, keys: list[str]) -> int:
        marks = ",".join("?" * len(keys))
        try:
            return self._query(f"SELECT count(*) FROM {collection} WHERE key IN ({marks})", tuple(keys))[0][0]  # nosec B608  # a module constant's table; the keys are ? parameters
        except StoreUnavailable:
            return 0  # no table yet

    def count(self, collection: str) -> int:
        try:
            return self._query(self.sql.count[collection], ())[0][0]
        except StoreUnavailable:
            return 0  # no table yet
