"""The service against a real Couchbase cluster, SQL++ routes included.

Runs only when COUCHBASE_TEST_CONNSTR is set (with COUCHBASE_TEST_USER,
COUCHBASE_TEST_PASSWORD, COUCHBASE_TEST_BUCKET; the bucket must exist and the
cluster needs the query and index services for the nickname and username
routes). The data goes to the scope COUCHBASE_TEST_SCOPE (`userprofile_test`
by default), created when missing, so a real `profiles` scope is left alone.
"""

from __future__ import annotations

import functools
import os
import sqlite3

import pytest
from conftest import COUNT, SEED, TOKEN
from test_caves import KV_PATHS

from testkit import LAYOUT, ServiceProcess, run_loaddata, wait_until
from testkit.caves import BUCKET

CONNSTR = os.environ.get("COUCHBASE_TEST_CONNSTR", "")
# Skipped, and reported so, when no cluster is named; only a run that selects the tier says so.
pytestmark = [
    pytest.mark.external,
    pytest.mark.skipif(
        not CONNSTR,
        reason="no real cluster: set COUCHBASE_TEST_CONNSTR (and COUCHBASE_TEST_USER, _PASSWORD, "
        "_BUCKET) to run these tests, see tests/README.md",
    ),
]

ENV = {
    "COUCHBASE_HOST": CONNSTR,
    "COUCHBASE_USER": os.environ.get("COUCHBASE_TEST_USER", "Administrator"),
    "COUCHBASE_PASSWORD": os.environ.get("COUCHBASE_TEST_PASSWORD", "password"),
    "COUCHBASE_BUCKET": os.environ.get("COUCHBASE_TEST_BUCKET", BUCKET),
    "COUCHBASE_SCOPE": os.environ.get("COUCHBASE_TEST_SCOPE", "userprofile_test"),
}
INDEX_CATCH_UP = 30  # seconds for the indexes to see freshly loaded documents


@pytest.fixture(scope="module")
def loaded():
    return run_loaddata(ENV, "--count", str(COUNT), "--seed", str(SEED), "--token", TOKEN, "--overwrite")


@pytest.fixture(scope="module")
def cb_server(loaded, tmp_path_factory):
    log = tmp_path_factory.mktemp("realcluster") / "service.log"
    svc = ServiceProcess(ENV, "--token-refresh", "1", log_path=log).start(wait_for="/readyz")
    yield svc
    svc.stop()
    assert "Traceback" not in svc.log()
    assert TOKEN not in svc.log() and ENV["COUCHBASE_PASSWORD"] not in svc.log()


def test_loaddata_creates_the_indexes(loaded):
    assert f"loaded {COUNT} profiles" in loaded.stdout
    assert "could not create the indexes" not in loaded.stderr


def test_count_is_a_sql_count():
    import cbconn

    store = cbconn.CouchbaseStore.from_environ(ENV)
    try:
        store.wait_connected(30)
        assert wait_until(lambda: store.count(LAYOUT.profiles) >= COUNT, INDEX_CATCH_UP)
    finally:
        store.close()


@pytest.mark.parametrize("path", KV_PATHS)
def test_key_value_routes_answer_as_on_the_embedded_store(cb_server, server, path):
    cb_status, cb_headers, cb_body = cb_server.get(path, TOKEN)
    ref_status, ref_headers, ref_body = server.get(path, TOKEN)
    assert (cb_status, cb_body) == (ref_status, ref_body)
    assert cb_headers["Content-Type"] == ref_headers["Content-Type"]


def query_paths(seeded_db) -> list[str]:
    with sqlite3.connect(seeded_db) as conn:
        nicknames = [
            row[0]
            for row in conn.execute(
                f"SELECT nickname FROM {LAYOUT.profiles} GROUP BY nickname ORDER BY count(*) DESC, nickname LIMIT 3"
            )
        ]
        usernames = [row[0] for row in conn.execute(f"SELECT user_id FROM {LAYOUT.profiles} ORDER BY key LIMIT 3")]
    return [f"/api/v1/nickname/{n}" for n in [*nicknames, "noSuchNickname"]] + [
        f"/api/v1/username/{u}" for u in [*usernames, "no-such-user"]
    ]


def test_query_routes_answer_as_on_the_embedded_store(cb_server, server, seeded_db):
    """SQL++ lookups (prepared, named parameters) then key-value gets: the same bytes, the same order."""

    def status_and_body(svc, path):
        status, _, body = svc.get(path, TOKEN)
        return status, body

    def as_on_couchbase(path, expected):
        return status_and_body(cb_server, path) == expected

    for path in query_paths(seeded_db):
        expected = status_and_body(server, path)
        assert wait_until(functools.partial(as_on_couchbase, path, expected), INDEX_CATCH_UP), path


def test_auth_and_health(cb_server):
    assert cb_server.get("/api/v1/id/1")[0] == 401
    assert cb_server.get("/api/v1/id/1", headers={"x-access-token": TOKEN})[0] == 200
    assert cb_server.get("/healthz")[0] == 200
    assert cb_server.get("/readyz")[0] == 200


def test_token_rotation(cb_server):
    rotated = "rotated-token-real-7f3e"
    run_loaddata(ENV, "--rotate-token", "--token", rotated)
    try:
        assert wait_until(lambda: cb_server.get("/api/v1/id/1", rotated)[0] == 200, 5)
        assert cb_server.get("/api/v1/id/1", TOKEN)[0] == 401
    finally:
        run_loaddata(ENV, "--rotate-token", "--token", TOKEN)
    assert wait_until(lambda: cb_server.get("/api/v1/id/1", TOKEN)[0] == 200, 5)
