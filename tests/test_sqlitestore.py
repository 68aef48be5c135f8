"""sqlitestore.py: the embedded store's lookups, bytes in, the same bytes out; pages by keyset;
the tables named by the settings."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from sqlitestore import SQLiteStore
from store import FIRST_PAGE, Layout, StoreUnavailable, encode_doc
from testkit import LAYOUT

pytestmark = pytest.mark.inprocess
PROFILES, IMAGES, AUTH = LAYOUT.all


def profile(record_id: int, nickname: str, user_id: str = "") -> tuple[str, dict]:
    return f"{PROFILES}:{record_id}", {
        "record_id": record_id,
        "nickname": nickname,
        "user_id": user_id or f"u{record_id}",
    }


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(str(tmp_path / "deep" / "dir" / "s.db"), busy_timeout=2, layout=LAYOUT)  # missing folders are made
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
    s.upsert(AUTH, [(LAYOUT.token_key, {"token": "secret"})])
    yield s
    s.close()


def every(find, value: str, limit: int) -> list[list[int]]:
    """The record ids of each page of a lookup, walked to its end by the cursors it gives."""
    pages, after = [], FIRST_PAGE
    while True:
        docs, after_last = find(value, after, limit)
        pages.append([json.loads(d)["record_id"] for d in docs])
        if after_last is None:
            return pages
        assert after_last == pages[-1][-1]  # the cursor is the last record_id of the page
        after = after_last


def test_gets_return_the_written_bytes(store):
    doc = {"record_id": 1, "nickname": "twin", "user_id": "u1", "é": "ü"}
    assert store.get_profile("1") == encode_doc(doc)
    assert store.get_image("1") == encode_doc({"record_id": 1, "type": "png", "image": "AAAA"})
    assert store.get_profile("4") is None and store.get_image("2") is None
    assert store.get_profile("x" * 300) is None  # longer than any key can be


def test_nickname_finds_all_in_record_order_and_username_one(store):
    docs, after = store.find_by_nickname("twin", FIRST_PAGE, 100)
    assert [d[:14] for d in docs] == [b'{"record_id":1', b'{"record_id":2'] and after is None
    assert store.find_by_username("u3", FIRST_PAGE, 100) == ([store.get_profile("3")], None)
    assert store.find_by_nickname("nobody", FIRST_PAGE, 100) == ([], None)
    assert store.find_by_username("' OR 1=1 --", FIRST_PAGE, 100) == ([], None)


def test_pages_walk_every_match_once_in_order(store):
    store.upsert(PROFILES, [profile(n, "many", "same") for n in range(10, 35)])
    assert every(store.find_by_nickname, "many", 10) == [list(range(10, 20)), list(range(20, 30)), list(range(30, 35))]
    assert every(store.find_by_username, "same", 25) == [list(range(10, 35))]  # exactly a page: no next
    assert every(store.find_by_nickname, "many", 1)[-1] == [34]
    # Keyset: a profile added mid-walk before the cursor is not seen, after it is seen once.
    _, after = store.find_by_nickname("many", FIRST_PAGE, 10)
    store.upsert(PROFILES, [profile(5, "many"), profile(40, "many")])
    rest = every(lambda v, a, n: store.find_by_nickname(v, max(a, after), n), "many", 10)
    assert [n for page in rest for n in page] == [*range(20, 35), 40]


def test_a_page_is_read_from_the_index_in_order(store):
    """(nickname, record_id) gives the matches in the page's order: SQLite neither sorts them nor
    reads the ones before the cursor."""
    for statement in (store.sql.by_nickname, store.sql.by_username):
        with sqlite3.connect(store.path) as conn:
            plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement, ("x", 5, 11)))
        assert "USING INDEX" in plan and "record_id>?" in plan.replace(" ", ""), plan
        assert "TEMP B-TREE" not in plan, plan


def test_renamed_collections_are_the_tables_and_the_keys(tmp_path):
    layout = Layout("people", "pics", "secrets")
    s = SQLiteStore(str(tmp_path / "r.db"), busy_timeout=2, layout=layout)
    s.create_schema()
    s.upsert("people", [("people:1", {"record_id": 1, "nickname": "n", "user_id": "u"})])
    s.upsert("pics", [("pics:1", {"record_id": 1, "type": "png", "image": ""})])
    s.upsert("secrets", [("secrets:1", {"token": "t"})])
    assert s.get_profile("1") and s.get_image("1") and s.read_token() == "t"
    assert s.find_by_nickname("n", FIRST_PAGE, 5)[0] == [s.get_profile("1")]
    with sqlite3.connect(s.path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"people", "pics", "secrets"}
    s.close()
    with pytest.raises(ValueError, match="three names"):
        Layout("a", "b", "a")


def test_token_count_and_ping(store):
    assert store.read_token() == "secret"
    assert store.count(PROFILES) == 3
    store.ping()
    store.upsert(PROFILES, [(f"{PROFILES}:1", {"record_id": 1, "nickname": "solo", "user_id": "u1"})])
    assert store.count(PROFILES) == 3 and len(store.find_by_nickname("twin", FIRST_PAGE, 10)[0]) == 1


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
    s = SQLiteStore(str(path), busy_timeout=2, layout=LAYOUT)
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
        lambda: store.find_by_nickname("twin", FIRST_PAGE, 1),
        lambda: store.find_by_username("u1", FIRST_PAGE, 1),
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
