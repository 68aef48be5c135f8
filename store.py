"""The store interface the request handler calls, and how one is chosen.

Every read returns stored JSON documents as ``bytes``, exactly as they were
written, so the handler can put them on the wire without decoding them.
Two implementations: ``sqlitestore.SQLiteStore`` (the embedded default) and
``cbconn.CouchbaseStore``; ``stores.open_store`` opens the one the settings select,
so this interface depends on neither.
"""

from __future__ import annotations

import json
from typing import Protocol, runtime_checkable

# Collections of the data model: the same names in both stores.
PROFILES = "user_data"
IMAGES = "user_images"
AUTH = "service_auth"
COLLECTIONS = (PROFILES, IMAGES, AUTH)
TOKEN_KEY = AUTH + ":1"

# Couchbase refuses keys over 250 bytes, so no such key can exist in either store.
MAX_KEY_BYTES = 250


class StoreUnavailable(Exception):
    """The store did not answer (down, unreachable, overloaded): HTTP 503."""


class StoreTimeout(StoreUnavailable):
    """The store did not answer within the operation timeout: HTTP 504."""


def encode_doc(doc: dict) -> bytes:
    """The one JSON serialisation both stores write, so their bytes agree."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


@runtime_checkable
class Store(Protocol):
    """What the service needs of a store: the request path's lookups.

    Lookups raise ``StoreUnavailable`` (or ``StoreTimeout``) on a store fault
    and never block past the store's operation timeout.
    """

    # True when a lookup is work done in this process (an embedded database)
    # rather than a wait on the network; the server then answers requests one
    # at a time, which keeps its threads from contending for the interpreter lock.
    serial: bool = False

    def counters(self) -> dict[str, int]:
        """Counts of the store's own events for /metrics (``metrics.STORE_COUNTERS``), by name."""
        return {}

    def get_profile(self, record_id: str) -> bytes | None:
        """The ``user_data:<id>`` document, or None."""
        ...

    def find_by_nickname(self, nickname: str) -> list[bytes]:
        """Every profile whose ``nickname`` is this, ordered by record id."""
        ...

    def find_by_username(self, username: str) -> list[bytes]:
        """The profile whose ``user_id`` is this (a list of zero or one)."""
        ...

    def get_image(self, record_id: str) -> bytes | None:
        """The ``user_images:<id>`` document, or None."""
        ...

    def read_token(self) -> str | None:
        """The ``token`` field of ``service_auth:1``, or None when absent."""
        ...

    def ping(self) -> None:
        """Return when the store answers; raise ``StoreUnavailable`` if not."""
        ...

    def close(self) -> None: ...

    def __str__(self) -> str:
        """Where the data is, for the start-up log line (never a password)."""
        ...


@runtime_checkable
class LoadableStore(Store, Protocol):
    """A store the loader (loaddata.py) can fill."""

    def create_schema(self) -> None:
        """Create the collections and indexes when missing (idempotent)."""
        ...

    def upsert(self, collection: str, docs: list[tuple[str, dict]]) -> None:
        """Write ``(key, document)`` pairs to a collection, replacing any."""
        ...

    def count(self, collection: str) -> int:
        """How many documents a collection holds."""
        ...
