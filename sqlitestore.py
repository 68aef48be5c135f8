"""The embedded default store: the three collections of the data model in one SQLite file.

Each collection is a table of ``key -> doc`` where ``doc`` is the document's
JSON as written; ``user_data`` also carries ``nickname`` and ``user_id``
columns, indexed, for the two lookups that are not by key.
"""

from __future__ import annotations

import os
import queue
import sqlite3
from collections.abc import Callable
from typing import Any

from store import (
    AUTH,
    COLLECTIONS,
    IMAGES,
    MAX_KEY_BYTES,
    PROFILES,
    TOKEN_KEY,
    Store,
    StoreUnavailable,
    encode_doc,
)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {PROFILES} (
    key TEXT PRIMARY KEY, doc BLOB NOT NULL, nickname TEXT, user_id TEXT, record_id INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {PROFILES}_nickname ON {PROFILES} (nickname, record_id);
CREATE INDEX IF NOT EXISTS {PROFILES}_user_id ON {PROFILES} (user_id);
CREATE TABLE IF NOT EXISTS {IMAGES} (key TEXT PRIMARY KEY, doc BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {AUTH} (key TEXT PRIMARY KEY, doc BLOB NOT NULL) WITHOUT ROWID;
"""

GET = {c: f"SELECT doc FROM {c} WHERE key = ?" for c in COLLECTIONS}  # nosec B608  # table names are module constants; the key is a ? parameter
BY_NICKNAME = f"SELECT doc FROM {PROFILES} WHERE nickname = ? ORDER BY record_id"  # nosec B608  # a constant table name; the nickname is a ? parameter
BY_USERNAME = f"SELECT doc FROM {PROFILES} WHERE user_id = ?"  # nosec B608  # a constant table name; the username is a ? parameter
# Written out: a table name cannot be a query parameter.
PING = "SELECT 1 FROM service_auth LIMIT 1"
COUNT = {
    "user_data": "SELECT count(*) FROM user_data",
    "user_images": "SELECT count(*) FROM user_images",
    "service_auth": "SELECT count(*) FROM service_auth",
}
TOKEN = f"SELECT json_extract(doc, '$.token') FROM {AUTH} WHERE key = ?"  # nosec B608  # a constant table name; the key is a ? parameter


class SQLiteStore(Store):
    """SQLite behind a pool of connections: one per thread that is using it.

    A pool rather than a thread-local: the server starts a thread per client
    connection, and opening SQLite for each would cost more than the lookup.
    """

    serial = True  # a lookup is a few microseconds of CPU in this process

    def __init__(self, path: str, busy_timeout: float):
        self.path = path
        self.busy_timeout = busy_timeout
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
        row = self._query(GET[collection], (key,), sqlite3.Cursor.fetchone)  # a key has one row
        return row[0] if row else None

    def get_profile(self, record_id: str) -> bytes | None:
        return self._get(PROFILES, record_id)

    def get_image(self, record_id: str) -> bytes | None:
        return self._get(IMAGES, record_id)

    def find_by_nickname(self, nickname: str) -> list[bytes]:
        return [row[0] for row in self._query(BY_NICKNAME, (nickname,))]

    def find_by_username(self, username: str) -> list[bytes]:
        return [row[0] for row in self._query(BY_USERNAME, (username,))]

    def read_token(self) -> str | None:
        rows = self._query(TOKEN, (TOKEN_KEY,))
        return rows[0][0] if rows and rows[0][0] else None

    def ping(self) -> None:
        self._query(PING, ())

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
            conn.executescript(SCHEMA)
        finally:
            conn.close()

    def upsert(self, collection: str, docs: list[tuple[str, dict]]) -> None:
        conn = self._connect()
        try:
            with conn:
                if collection == PROFILES:
                    conn.executemany(
                        f"INSERT OR REPLACE INTO {PROFILES} VALUES (?, ?, ?, ?, ?)",
                        [(k, encode_doc(d), d.get("nickname"), d.get("user_id"), d.get("record_id")) for k, d in docs],
                    )
                else:
                    conn.executemany(
                        f"INSERT OR REPLACE INTO {collection} VALUES (?, ?)",
                        [(k, encode_doc(d)) for k, d in docs],
                    )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc
        finally:
            conn.close()

    def count(self, collection: str) -> int:
        try:
            return self._query(COUNT[collection], ())[0][0]
        except StoreUnavailable:
            return 0  # no table yet
