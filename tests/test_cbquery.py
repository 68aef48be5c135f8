"""cbquery.py on Couchbase's own SQL++ engine: the nickname and username statements answered
by cbq-engine behind CAVES's query port (testkit.caves.QueryEngine), through the real SDK and
the real service process.

The answers are compared byte for byte with the embedded store's service (conftest's
``server``, the same --count/--seed/--token): found and not found, every page of the largest
nickname. Parameters that look like SQL++ are answered as values, never executed. Faults of
the engine: stopped (a fast 503), frozen (504 at COUCHBASE_QUERY_TIMEOUT), restarted (its
prepared statements gone: prepared again, and lookups answered). The loader's indexes meet the
engine's parser. A CAVES without the engine is a fast 503 (test_caves.py).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import pytest
from conftest import COUNT, SEED, TOKEN
from test_paging import largest_nickname, next_page

import cbconn
import cbquery
from testkit import LAYOUT, ServiceProcess, run_loaddata, wait_until
from testkit.caves import Caves, QueryEngine

pytestmark = pytest.mark.external

QUERY_TIMEOUT = 2.0  # the fault tests' (the others allow 10 s: the first lookup writes the engine's datastore)
HOSTILE = [
    "o'brien",
    'say "hi"',
    "back\\slash",
    "trailing\\",
    "$nickname",
    "$1",
    "Zoë Ünïcödé 名前",
    "x' OR '1'='1",
    'x" OR nickname IS NOT MISSING OR "',
    "`user_data`",
    "SELECT * FROM user_data",
    "1) UNION SELECT RAW META().id FROM service_auth --",
    "DELETE FROM user_data",
    "/* comment */ nickname",
]


@dataclass
class Cluster:
    caves: Caves
    engine: QueryEngine
    env: dict  # the service's settings for it
    loaded: subprocess.CompletedProcess  # loaddata.py's run

    def stop(self) -> None:
        self.caves.stop()  # and its engine


def start_cluster(workdir, count: int = COUNT, query_timeout: float = 10, names: dict | None = None) -> Cluster:
    """CAVES with the engine, loaded by loaddata.py with conftest's data."""
    layout = {"PROFILES_COLLECTION": LAYOUT.profiles, **(names or {})}
    engine = QueryEngine(workdir / "datastore", [layout["PROFILES_COLLECTION"]], log_path=workdir / "cbq.log")
    caves = Caves(log_path=workdir / "caves.log", engine=engine.start()).start()
    env = caves.env(COUCHBASE_QUERY_TIMEOUT=str(query_timeout), COUCHBASE_CONNECT_TIMEOUT="3", **layout)
    caves.add_bucket()
    loaded = run_loaddata(env, "--count", str(count), "--seed", str(SEED), "--token", TOKEN)
    return Cluster(caves, engine, env, loaded)


def engine_query(engine: QueryEngine, statement: str) -> list:
    request = urllib.request.Request(engine.url, data=json.dumps({"statement": statement}).encode())
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as resp:  # nosec B310  # the test's own loopback engine
        return json.loads(resp.read())["results"]


def answered(svc: ServiceProcess, path: str) -> bytes:
    """The 200 body of a lookup, once the engine answers within the timeout (its first statement
    writes the datastore, on a busy machine longer than the fault tests' 2 s)."""

    def body_of_a_200() -> bytes | None:
        status, _, body = svc.get(path, TOKEN)
        return body if status == 200 else None

    body = wait_until(body_of_a_200, 60)
    assert body, path
    return body


def timed_get(svc: ServiceProcess, path: str) -> tuple[int, float, bytes]:
    started = time.monotonic()
    status, _, body = svc.get(path, TOKEN)
    return status, time.monotonic() - started, body


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    started = start_cluster(tmp_path_factory.mktemp("cbquery"))
    yield started
    started.stop()


@pytest.fixture(scope="module")
def cb_server(cluster, tmp_path_factory):
    svc = ServiceProcess(cluster.env, log_path=tmp_path_factory.mktemp("cbservice") / "service.log")
    svc.start(wait_for="/readyz")
    yield svc
    svc.stop()
    assert "Traceback" not in svc.log() and TOKEN not in svc.log()


def test_the_loaders_indexes_parse_and_the_file_datastore_refuses_them_with_a_warning(cluster):
    out = cluster.loaded.stdout + cluster.loaded.stderr
    assert f"loaded {COUNT} profiles" in out
    assert "warning: the query service cannot create indexes (error 15010" in out
    assert "CREATE INDEX `user_data_nickname` IF NOT EXISTS ON `user_data`(nickname, record_id)" in out
    assert "CREATE INDEX `user_data_user_id_record_id` IF NOT EXISTS ON `user_data`(user_id, record_id)" in out
    assert "could not create the indexes" not in out
    # 15010 comes after the parser: a statement it cannot parse is refused another way (3000).
    with pytest.raises(urllib.error.HTTPError) as refused:
        engine_query(cluster.engine, "CREATE INDEX `x` IF NOT EXISTS ON `user_data`(nickname,")
    assert json.loads(refused.value.read())["errors"][0]["code"] == 3000


def nicknames_and_usernames(db) -> tuple[list[str], list[str]]:
    with sqlite3.connect(db) as conn:
        nicknames = [r[0] for r in conn.execute(f"SELECT DISTINCT nickname FROM {LAYOUT.profiles} ORDER BY 1 LIMIT 12")]
        usernames = [r[0] for r in conn.execute(f"SELECT user_id FROM {LAYOUT.profiles} ORDER BY key LIMIT 12")]
    return nicknames, usernames


def test_lookups_answer_as_on_the_embedded_store(cb_server, server, seeded_db):
    nicknames, usernames = nicknames_and_usernames(seeded_db)
    paths = [f"/api/v1/nickname/{n}" for n in nicknames] + [f"/api/v1/username/{u}" for u in usernames]
    paths += ["/api/v1/nickname/nobodyByThisName", "/api/v1/username/nobody", "/api/v1/nickname/a?limit=1"]
    for path in paths:
        cb_status, cb_headers, cb_body = cb_server.get(path, TOKEN)
        ref_status, ref_headers, ref_body = server.get(path, TOKEN)
        assert (cb_status, cb_body, cb_headers["ETag"]) == (ref_status, ref_body, ref_headers["ETag"]), path
    assert cb_server.get(f"/api/v1/username/{usernames[0]}", TOKEN)[0] == 200


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_every_page_of_the_largest_nickname_is_the_embedded_stores(cb_server, server, seeded_db, limit):
    nickname, ids = largest_nickname(seeded_db)
    path: str | None = f"/api/v1/nickname/{nickname}?limit={limit}"
    walked = []
    while path:
        cb_status, cb_headers, cb_body = cb_server.get(path, TOKEN)
        ref_status, ref_headers, ref_body = server.get(path, TOKEN)
        assert (cb_status, cb_body, cb_headers["Link"]) == (ref_status, ref_body, ref_headers["Link"]), path
        walked += [p["record_id"] for p in json.loads(cb_body)]
        named = next_page(cb_headers["Link"])
        path = named[0] if named else None
    assert walked == ids


def test_parameters_that_look_like_sqlpp_are_values_never_statements(cb_server, server, cluster):
    env = cluster.env
    for value in HOSTILE:
        encoded = urllib.parse.quote(value, safe="")
        for route in ("nickname", "username"):
            status, body = cb_server.get(f"/api/v1/{route}/{encoded}", TOKEN)[::2]
            assert (status, body) == server.get(f"/api/v1/{route}/{encoded}", TOKEN)[::2] == (404, body), value
    # Stored as values, they are found as values: exactly their profiles.
    store = cbconn.CouchbaseStore.from_environ(env)
    try:
        store.wait_connected(10)
        docs = [
            (f"{LAYOUT.profiles}:{9000 + n}", {"record_id": 9000 + n, "nickname": v, "user_id": v})
            for n, v in enumerate(HOSTILE)
        ]
        store.upsert(LAYOUT.profiles, docs)
        for n, value in enumerate(HOSTILE):
            encoded = urllib.parse.quote(value, safe="")
            for route in ("nickname", "username"):
                status, _, body = cb_server.get(f"/api/v1/{route}/{encoded}", TOKEN)
                assert status == 200 and [p["record_id"] for p in json.loads(body)] == [9000 + n], value
    finally:
        store.close()
    assert cb_server.get(f"/api/v1/id/{COUNT}", TOKEN)[0] == 200  # nothing was deleted


def test_a_profile_added_mid_walk_is_neither_skipped_nor_repeated(cb_server, cluster):
    store = cbconn.CouchbaseStore.from_environ(cluster.env)

    def add(*record_ids: int) -> None:
        docs = [
            (f"{LAYOUT.profiles}:{n}", {"record_id": n, "nickname": "midWalk", "user_id": f"mid{n}"})
            for n in record_ids
        ]
        store.upsert(LAYOUT.profiles, docs)

    try:
        store.wait_connected(10)
        add(9101, 9102, 9103, 9104, 9105)
        status, headers, body = cb_server.get("/api/v1/nickname/midWalk?limit=2", TOKEN)
        assert status == 200 and [p["record_id"] for p in json.loads(body)] == [9101, 9102]
        add(9100, 9106)  # one before the cursor, one after it
        walked = []
        named = next_page(headers["Link"])
        while named:
            status, headers, body = cb_server.get(named[0], TOKEN)
            walked += [p["record_id"] for p in json.loads(body)]
            named = next_page(headers["Link"])
        assert walked == [9103, 9104, 9105, 9106]
    finally:
        store.close()


def test_the_engine_stopped_is_a_fast_503_then_restarted_its_statements_are_prepared_again(tmp_path):
    cluster = start_cluster(tmp_path, count=30, query_timeout=QUERY_TIMEOUT)
    svc = ServiceProcess(cluster.env, log_path=tmp_path / "service.log").start(wait_for="/readyz")
    engine = cluster.engine
    path = "/api/v1/nickname/" + json.loads(svc.get("/api/v1/id/7", TOKEN)[2])[0]["nickname"]
    try:
        good = answered(svc, path)
        assert svc.get(path, TOKEN)[2] == good  # prepared, then executed by name
        engine.stop()
        for _ in range(3):
            status, seconds, _ = timed_get(svc, path)
            assert status == 503 and seconds < 1
        assert svc.get("/api/v1/id/7", TOKEN)[0] == 200  # key-value lookups are not the engine's
        assert svc.get("/readyz")[0] == 200
        engine.start()  # on the same port, without the statements it had prepared
        # The first lookups meet "no such prepared statement": the SDK prepares the statement
        # again, but loses that answer (cbquery's docstring), which the watch ends as a 504.
        status, seconds, _ = timed_get(svc, path)
        assert status in (200, 504) and seconds < QUERY_TIMEOUT + cbquery.WATCH_GRACE + 1.5
        assert answered(svc, path) == good
        prepared = engine_query(engine, "SELECT RAW statement FROM system:prepareds")
        assert any("WHERE nickname = $nickname" in statement for statement in prepared), prepared
    finally:
        svc.stop()
        cluster.stop()
    assert "Traceback" not in svc.log()


def test_the_engine_frozen_is_a_504_at_the_query_timeout_and_recovers(tmp_path):
    cluster = start_cluster(tmp_path, count=30, query_timeout=QUERY_TIMEOUT)
    svc = ServiceProcess(cluster.env, log_path=tmp_path / "service.log").start(wait_for="/readyz")
    path = "/api/v1/username/" + json.loads(svc.get("/api/v1/id/3", TOKEN)[2])[0]["user_id"]
    try:
        good = answered(svc, path)
        cluster.engine.freeze()
        for _ in range(2):
            status, seconds, _ = timed_get(svc, path)
            assert status == 504 and QUERY_TIMEOUT - 0.1 < seconds < QUERY_TIMEOUT + cbquery.WATCH_GRACE + 1
        assert svc.get("/healthz")[0] == 200 and svc.get("/api/v1/id/3", TOKEN)[0] == 200
        cluster.engine.thaw()
        assert answered(svc, path) == good
    finally:
        svc.stop()
        cluster.stop()


def test_renamed_collections_end_to_end(tmp_path):
    names = {"PROFILES_COLLECTION": "people", "IMAGES_COLLECTION": "pics", "AUTH_COLLECTION": "secrets"}
    cluster = start_cluster(tmp_path, count=40, names=names)
    svc = ServiceProcess(cluster.env, log_path=tmp_path / "service.log").start(wait_for="/readyz")
    try:
        assert "CREATE INDEX `people_nickname` IF NOT EXISTS ON `people`" in cluster.loaded.stderr
        [profile] = json.loads(svc.get("/api/v1/id/9", TOKEN)[2])
        for path in (
            f"/api/v1/nickname/{profile['nickname']}",
            f"/api/v1/username/{profile['user_id']}",
            "/api/v1/picture/raw/9",
            "/api/v1/picture/record/9",
        ):
            assert svc.get(path, TOKEN)[0] == 200, path
        assert profile in json.loads(svc.get(f"/api/v1/username/{profile['user_id']}", TOKEN)[2])
    finally:
        svc.stop()
        cluster.stop()
    assert "token: read from secrets:1" in svc.log()
