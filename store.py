"""The store interface the request handler calls, and how one is chosen.

Every read returns stored JSON documents as ``bytes``, exactly as they were
written, so the handler can put them on the wire without decoding them.
Two implementations: ``sqlitestore.SQLiteStore`` (the embedded default) and
``cbconn.CouchbaseStore``; ``stores.open_store`` opens the one the settings select,
so this interface depends on neither.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

from options import Options

# Couchbase refuses keys over 250 bytes, so no such key can exist in either store.
MAX_KEY_BYTES = 250


@dataclass(frozen=True)
class Layout:
    """The data's layout: the names of the three collections of the data model, from the
    settings (PROFILES_COLLECTION, IMAGES_COLLECTION, AUTH_COLLECTION; the embedded store's
    tables have the same names), and the documents' keys: ``<collection>:<id>``, as the blog's
    generator writes them (``user_data:42``); the token is the ``token`` field of ``<auth>:1``."""

    profiles: str
    images: str
    auth: str
    all: tuple[str, str, str] = field(init=False)
    token_key: str = field(init=False)

    def __post_init__(self) -> None:
        if len({self.profiles, self.images, self.auth}) != 3:
            raise ValueError(f"the three collections need three names: {self.profiles}, {self.images}, {self.auth}")
        object.__setattr__(self, "all", (self.profiles, self.images, self.auth))
        object.__setattr__(self, "token_key", f"{self.auth}:1")

    @classmethod
    def of(cls, options: Options) -> Layout:
        return cls(options.profiles_collection, options.images_collection, options.auth_collection)


# A page of a lookup that may match many profiles (nickname, username): the profiles in
# record_id order, at most the page's size, and the record_id to continue after when
# there are more (keyset paging: the next page is ``record_id > after``), else None.
Page = tuple[list[bytes], int | None]
# The record_ids a page can follow are the integers SQL++ numbers (doubles) hold exactly;
# the first page is the one after the lowest of them.
MAX_RECORD_ID = 2**53
FIRST_PAGE = -MAX_RECORD_ID


Match = TypeVar("Match")  # a document, or its key


def page_of(rows: list[tuple[int, Match]], limit: int) -> tuple[list[Match], int | None]:
    """The page from the ``limit + 1`` first ``(record_id, match)`` rows a store asked for:
    one more than the page tells whether another page follows."""
    if len(rows) > limit:
        return [doc for _, doc in rows[:limit]], rows[limit - 1][0]
    return [doc for _, doc in rows], None


class StoreUnavailable(Exception):
    """The store did not answer (down, unreachable, overloaded): HTTP 503."""


class StoreTimeout(StoreUnavailable):
    """The store did not answer within the operation timeout: HTTP 504."""


def encode_doc(doc: dict) -> bytes:
    """The one JSON serialisation both stores write, so their bytes agree."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def token_of(doc: bytes | None) -> str | None:
    """The ``token`` field of the token's document: None when absent, empty or not a string."""
    try:
        token = json.loads(doc).get("token") if doc is not None else None
    except (ValueError, AttributeError):  # not a JSON object: no token in it
        return None
    return token if isinstance(token, str) and token else None


@runtime_checkable
class Store(Protocol):
    """What the service needs of a store: the request path's lookups.

    Lookups raise ``StoreUnavailable`` (or ``StoreTimeout``) on a store fault
    and never block past the store's operation timeout.
    """

    layout: Layout  # the collections' names and the keys, from the settings

    # True when a lookup is work done in this process (an embedded database)
    # rather than a wait on the network; the server then answers requests one
    # at a time, which keeps its threads from contending for the interpreter lock.
    serial: bool = False

    def counters(self) -> dict[str, int]:
        """Counts of the store's own events for /metrics (``metrics.STORE_COUNTERS``), by name."""
        return {}

    def get_profile(self, record_id: str) -> bytes | None:
        """The ``<profiles>:<id>`` document, or None."""
        ...

    def find_by_nickname(self, nickname: str, after: int, limit: int) -> Page:
        """A page of the profiles whose ``nickname`` is this: those of a ``record_id`` above
        ``after``, at most ``limit``, by record_id (a profile without a numeric record_id is
        never listed)."""
        ...

    def find_by_username(self, username: str, after: int, limit: int) -> Page:
        """A page of the profiles whose ``user_id`` is this, as ``find_by_nickname`` (a
        username is unique in the data ``loaddata.py`` writes, not in every data set)."""
        ...

    def get_image(self, record_id: str) -> bytes | None:
        """The ``<images>:<id>`` document, or None."""
        ...

    def read_token(self) -> str | None:
        """The ``token`` field of ``<auth>:1``, or None when absent."""
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

    def existing(self, collection: str, keys: list[str]) -> int:
        """How many of these keys a collection holds (the loader's check before it writes)."""
        ...
