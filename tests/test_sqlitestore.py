"""sqlitestore.py: the embedded store's lookups, bytes in, the same bytes out."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from sqlitestore import SQLiteStore
from store import AUTH, IMAGES, PROFILES, TOKEN_KEY, StoreUnavailable, encode_doc

pytestmark = pytest.mark.inprocess


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(str(tmp_path / "deep" / "dir" / "s.db"), busy_timeout=2)  # missing folders are made
    s.create_schema()
    s.create_schema()  # idempotent
    s.upsert(
        PROFILES,
        [
            (
                f"{PROFILES}:{i}",
                {"record_id": i, "nickname": "twin" if i < 3 else f"n{i}", "user_id": f"u{i}", "é": "ü"},
            )
            for i in (2, 1, 3)
        ],
    )
    s.upsert(IMAGES, [(f"{IMAGES}:1", {"record_id": 1, "type": "png", "image": "AAAA"})])
    s.upsert(AUTH, [(TOKEN_KEY, {"token": "secret"})])
    yield s
    s.close()


def test_gets_return_the_written_bytes(store):
    doc = {"record_id": 1, "nickname": "twin", "user_id": "u1", "é": "ü"}
    assert store.get_profile("1") == encode_doc(doc)
    assert store.get_image("1") == encode_doc({"record_id": 1, "type": "png", "image": "AAAA"})
    assert store.get_profile("4") is None and store.get_image("2") is None
    assert store.get_profile("x" * 300) is None  # longer than any key can be


def test_nickname_finds_all_in_record_order_and_username_one(store):
    assert [d[:14] for d in store.find_by_nickname("twin")] == [b'{"record_id":1', b'{"record_id":2']
    assert store.find_by_username("u3") == [store.get_profile("3")]
    assert store.find_by_nickname("nobody") == [] and store.find_by_username("' OR 1=1 --") == []


def test_token_count_and_ping(store):
    assert store.read_token() == "secret"
    assert store.count(PROFILES) == 3
    store.ping()
    store.upsert(PROFILES, [(f"{PROFILES}:1", {"record_id": 1, "nickname": "solo", "user_id": "u1"})])
    assert store.count(PROFILES) == 3 and [len(store.find_by_nickname("twin"))] == [1]


def test_concurrent_readers_share_the_pool(store):
    errors = []

    def read():
        try:
            for _ in range(200):
                assert store.get_profile("2") is not None
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_broken_file_raises_store_unavailable(tmp_path):
    path = tmp_path / "broken.db"
    path.write_bytes(b"this is not a database" * 100)
    s = SQLiteStore(str(path), busy_timeout=2)
    with pytest.raises(StoreUnavailable, match="sqlite"):
        s.get_profile("1")
    with pytest.raises(StoreUnavailable):
        s.ping()


def test_no_lookup_holds_a_read_transaction_open(store):
    """The pool keeps a cursor per connection; each lookup must still end its read
    transaction, or readers would see an old snapshot and the WAL could not be emptied."""
    lookups = [
        lambda: store.get_profile("1"),
        lambda: store.get_profile("9"),
        lambda: store.get_image("1"),
        lambda: store.find_by_nickname("twin"),
        lambda: store.find_by_username("u1"),
        store.read_token,
        store.ping,
    ]
    for n, lookup in enumerate(lookups):
        lookup()
        store.upsert(PROFILES, [(f"{PROFILES}:{100 + n}", {"record_id": 100 + n, "nickname": "x", "user_id": "y"})])
        writer = sqlite3.connect(store.path, timeout=0.1)
        try:
            busy, _, _ = writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            writer.close()
        assert busy == 0, f"lookup {n} left a read transaction open"
        assert store.get_profile(str(100 + n)) is not None  # and a later lookup sees the write
