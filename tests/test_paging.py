"""Pages of the nickname and username lookups over the API, on the embedded store: limit and
cursor, the Link to the next page (RFC 8288), an ETag per page, 400 for a bad request, and
the first page of a small result byte for byte the whole answer. The same walk on the real
SQL++ engine: test_cbquery.py."""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
from zlib import crc32

import pytest
from conftest import TOKEN

from testkit import LAYOUT, ServiceProcess

pytestmark = pytest.mark.socket

LINK = re.compile(r'<(/api/v1/(?:nickname|username)/[^>?]+\?limit=(\d+)&cursor=(-?\d+))>; rel="next"')


def next_page(link: str | None) -> tuple[str, int, int] | None:
    """The path, limit and cursor a Link names (None for none); a Link of another form fails."""
    if link is None:
        return None
    found = LINK.fullmatch(link)
    assert found is not None, link
    return found[1], int(found[2]), int(found[3])


def largest_nickname(db) -> tuple[str, list[int]]:
    with sqlite3.connect(db) as conn:
        (nickname,) = conn.execute(
            f"SELECT nickname FROM {LAYOUT.profiles} GROUP BY nickname ORDER BY count(*) DESC, nickname LIMIT 1"
        ).fetchone()
        ids = [r[0] for r in conn.execute(f"SELECT record_id FROM {LAYOUT.profiles} WHERE nickname = ?", (nickname,))]
    return nickname, sorted(ids)


def walk(svc: ServiceProcess, path: str) -> list[tuple[list[dict], str, str | None]]:
    """Every page from ``path`` on, by the Links: (profiles, ETag, Link) of each."""
    pages = []
    following: str | None = path
    while following:
        status, headers, body = svc.get(following, TOKEN)
        assert status == 200, (following, body)
        link = headers["Link"]
        pages.append((json.loads(body), headers["ETag"], link))
        named = next_page(link)
        following = named[0] if named else None
    return pages


def test_every_page_of_the_largest_nickname_once_in_order(server, seeded_db):
    nickname, ids = largest_nickname(seeded_db)
    assert len(ids) >= 4, "the seeded data repeats nicknames"
    pages = walk(server, f"/api/v1/nickname/{nickname}?limit=3")
    assert [p["record_id"] for profiles, _, _ in pages for p in profiles] == ids
    assert all(len(profiles) == 3 for profiles, _, _ in pages[:-1]) and 1 <= len(pages[-1][0]) <= 3
    assert len({etag for _, etag, _ in pages}) == len(pages), "each page its own ETag"
    for (profiles, _, link), following in itertools.pairwise(pages):
        named = next_page(link)
        assert named is not None and named[1:] == (3, profiles[-1]["record_id"])
        assert following[0][0]["record_id"] > named[2]
    assert pages[-1][2] is None, "the last page names no next"


def test_the_first_page_of_a_small_result_is_the_whole_answer_byte_for_byte(server, seeded_db):
    """What clients got before pages: every match, in record_id order, the stored bytes in an
    array, its ETag the CRC-32 of that body, no Link."""
    nickname, ids = largest_nickname(seeded_db)
    with sqlite3.connect(seeded_db) as conn:
        docs = [
            conn.execute(f"SELECT doc FROM {LAYOUT.profiles} WHERE key = ?", (f"{LAYOUT.profiles}:{i}",)).fetchone()[0]
            for i in ids
        ]
    status, headers, body = server.get(f"/api/v1/nickname/{nickname}", TOKEN)
    assert status == 200 and body == b"[" + b",".join(docs) + b"]"
    assert headers["ETag"] == f'"{crc32(body):08x}"' and headers["Link"] is None
    [profile] = json.loads(server.get("/api/v1/id/17", TOKEN)[2])
    assert json.loads(server.get(f"/api/v1/username/{profile['user_id']}", TOKEN)[2]) == [profile]


def test_a_page_revalidates_with_its_etag_and_keeps_its_link(server, seeded_db):
    nickname, _ = largest_nickname(seeded_db)
    path = f"/api/v1/nickname/{nickname}?limit=2"
    status, headers, body = server.get(path, TOKEN)
    assert status == 200 and headers["Link"]
    assert headers["ETag"] != f'"{crc32(body):08x}"', "the ETag covers the Link too"
    status, again, body = server.get(path, TOKEN, headers={"If-None-Match": headers["ETag"]})
    assert (status, body) == (304, b"") and again["Link"] == headers["Link"] and again["ETag"] == headers["ETag"]
    assert server.get(path, TOKEN, method="HEAD")[1]["Link"] == headers["Link"]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=abc",
        "limit=",
        "limit=1.5",
        "limit=%zz",
        "limit=2&limit=2",
        "cursor=x",
        "cursor=",
        "cursor=1e3",
        "cursor=9007199254740992",
        "cursor=1&cursor=2",
    ],
)
def test_a_bad_limit_or_cursor_is_400(server, query):
    status, headers, body = server.get(f"/api/v1/nickname/anyone?{query}", TOKEN)
    assert status == 400, query
    assert json.loads(body)["message"]["error"].startswith(("limit must", "cursor must"))
    assert headers["Cache-Control"] == "no-store"
    assert server.get(f"/api/v1/username/anyone?{query}", TOKEN)[0] == 400


def test_other_query_parameters_and_other_routes_ignore_it(server, seeded_db):
    nickname, _ = largest_nickname(seeded_db)
    plain = server.get(f"/api/v1/nickname/{nickname}", TOKEN)[2]
    assert server.get(f"/api/v1/nickname/{nickname}?pretty=1&x=%zz&limitx=9", TOKEN)[2] == plain
    assert server.get(f"/api/v1/nickname/{nickname}?limit=1000", TOKEN)[2] == plain
    assert server.get(f"/api/v1/nickname/{nickname}?%6Cimit=%31%30%30", TOKEN)[2] == plain  # limit=100
    assert server.get("/api/v1/id/3?limit=0&cursor=x", TOKEN)[0] == 200  # no page there: not read
    assert server.get("/api/v1/nickname/nobodyByThisName?limit=5&cursor=7", TOKEN)[0] == 404
    # The token is checked before the query string is read.
    assert server.get("/api/v1/nickname/anyone?limit=0")[0] == 401


def test_page_size_and_its_maximum_are_settings(seeded_db, tmp_path):
    nickname, ids = largest_nickname(seeded_db)
    svc = ServiceProcess(
        {"USERPROFILE_DB": str(seeded_db), "PAGE_SIZE": "2", "MAX_PAGE_SIZE": "3"}, log_path=tmp_path / "s.log"
    ).start(wait_for="/readyz")
    try:
        status, headers, body = svc.get(f"/api/v1/nickname/{nickname}", TOKEN)
        assert [p["record_id"] for p in json.loads(body)] == ids[:2]
        assert next_page(headers["Link"]) == (f"/api/v1/nickname/{nickname}?limit=2&cursor={ids[1]}", 2, ids[1])
        assert svc.get(f"/api/v1/nickname/{nickname}?limit=3", TOKEN)[0] == 200
        status, _, body = svc.get(f"/api/v1/nickname/{nickname}?limit=4", TOKEN)
        assert status == 400 and b"from 1 to 3" in body
    finally:
        assert svc.stop() == 0
