"""The service on Couchbase over the SDK's real wire protocol, against CAVES.

CAVES emulates the key-value and management services (collections, sub-document
lookups) but has no SQL++ engine of its own: here the nickname and username lookups are a
fast 503; test_cbquery.py runs them on Couchbase's engine behind CAVES, test_cbconn.py at
the SDK boundary, and test_real_cluster.py against a real cluster.

Everything here is real processes: the emulator, ``loaddata.py`` and the service.
The key-value routes are compared byte for byte with the embedded-store
service of conftest.py, loaded with the same --count/--seed/--token.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from conftest import COUNT, SEED, TOKEN
from couchbase.exceptions import DocumentNotFoundException

import cbconn
from testkit import ServiceProcess, run_loaddata, wait_until
from testkit.caves import PASSWORD, Caves

pytestmark = pytest.mark.external

KV_TIMEOUT = 1.0
REFRESH = 1.0  # seconds between token re-reads of the service under test
NOT_FOUND = {"status": "failure", "message": {"error": "Not Found"}}


def couchbase_env(caves: Caves) -> dict:
    # The emulator's credentials (testkit.caves); the bucket is the service's default one,
    # added over the control socket (CAVES only makes `default`).
    return caves.env(
        COUCHBASE_KV_TIMEOUT=str(KV_TIMEOUT),
        COUCHBASE_CONNECT_TIMEOUT="3",
        COUCHBASE_QUERY_TIMEOUT="2",
    )


def start_caves(tmp_path) -> Caves:
    caves = Caves(log_path=tmp_path / "caves.log").start()
    caves.add_bucket()
    return caves


def start_service(env: dict, tmp_path, wait_for: str = "/readyz") -> ServiceProcess:
    svc = ServiceProcess(env, "--token-refresh", str(REFRESH), log_path=tmp_path / "service.log")
    return svc.start(wait_for=wait_for)


def check_log(svc: ServiceProcess, *secrets: str) -> None:
    log = svc.log()
    assert "Traceback" not in log
    for secret in (TOKEN, PASSWORD, *secrets):
        assert secret not in log


def timed_get(svc: ServiceProcess, path: str, token: str | None = TOKEN):
    started = time.monotonic()
    status, _headers, _body = svc.get(path, token)
    return status, time.monotonic() - started


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    caves = start_caves(tmp_path_factory.mktemp("caves"))
    yield caves
    caves.stop()


@pytest.fixture(scope="module")
def loaded(cluster):
    """CAVES loaded by loaddata.py with the data of conftest's embedded store."""
    return run_loaddata(couchbase_env(cluster), "--count", str(COUNT), "--seed", str(SEED), "--token", TOKEN)


@pytest.fixture(scope="module")
def cb_server(cluster, loaded, tmp_path_factory):
    svc = start_service(couchbase_env(cluster), tmp_path_factory.mktemp("cbservice"))
    yield svc
    svc.stop()
    check_log(svc)


# -- loading ------------------------------------------------------------------------
def test_loaddata_writes_to_couchbase_and_reports_its_rate(loaded):
    assert f"loaded {COUNT} profiles" in loaded.stdout
    assert "documents/s" in loaded.stdout
    # No query service in CAVES: said clearly, and the load went on.
    assert "could not create the indexes" in loaded.stderr
    assert TOKEN not in loaded.stdout + loaded.stderr


def test_loaddata_again_refuses_and_changes_nothing_unless_told_to_overwrite(cluster, loaded, cb_server):
    before = [cb_server.get(f"/api/v1/id/{n}", TOKEN)[2] for n in (1, COUNT)]
    env = couchbase_env(cluster)
    with pytest.raises(subprocess.CalledProcessError) as refused:
        run_loaddata(env, "--count", str(COUNT), "--seed", str(SEED + 1), "--token", TOKEN)  # other people
    assert refused.value.returncode == 1
    assert f"({COUNT} in user_data, {COUNT} in user_images)" in refused.value.stderr
    assert "--overwrite" in refused.value.stderr and "nothing was written" in refused.value.stderr
    assert [cb_server.get(f"/api/v1/id/{n}", TOKEN)[2] for n in (1, COUNT)] == before
    run_loaddata(env, "--count", str(COUNT), "--seed", str(SEED), "--token", TOKEN, "--overwrite")
    assert [cb_server.get(f"/api/v1/id/{n}", TOKEN)[2] for n in (1, COUNT)] == before  # the same documents


# -- the key-value routes, byte for byte as on the embedded store --------------------------
KV_PATHS = [
    f"/api/v1/{route}/{record_id}"
    for route in ("id", "picture/record", "picture/raw")
    for record_id in (
        "1",
        "2",
        str(COUNT // 2),
        str(COUNT),
        str(COUNT + 1),
        "0",
        "-1",
        "abc",
        "%C3%A9t%C3%A9",
        "1%20",
        "9" * 300,
    )
]


@pytest.mark.parametrize("path", KV_PATHS)
def test_key_value_routes_answer_as_on_the_embedded_store(cb_server, server, path):
    cb_status, cb_headers, cb_body = cb_server.get(path, TOKEN)
    ref_status, ref_headers, ref_body = server.get(path, TOKEN)
    assert cb_status == ref_status
    assert cb_headers["Content-Type"] == ref_headers["Content-Type"]
    assert cb_body == ref_body


def test_found_and_not_found(cb_server):
    status, headers, body = cb_server.get(f"/api/v1/id/{COUNT}", TOKEN)
    assert status == 200 and json.loads(body)[0]["record_id"] == COUNT
    status, headers, body = cb_server.get("/api/v1/picture/raw/1", TOKEN)
    assert status == 200 and headers["Content-Type"] == "image/png" and body.startswith(b"\x89PNG")
    for path in (f"/api/v1/id/{COUNT + 1}", f"/api/v1/picture/record/{COUNT + 1}", "/api/v1/nothing/1"):
        status, _, body = cb_server.get(path, TOKEN)
        assert (status, json.loads(body)) == (404, NOT_FOUND)


def test_auth(cb_server):
    status, headers, _body = cb_server.get("/api/v1/id/1")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert cb_server.get("/api/v1/id/1", "wrong-" + TOKEN)[0] == 401
    assert cb_server.get("/api/v1/id/1", headers={"x-access-token": TOKEN})[0] == 200
    assert cb_server.get("/healthz")[0] == 200
    assert cb_server.get("/readyz")[0] == 200


def test_query_routes_are_503_without_a_query_service(cb_server):
    """CAVES has no SQL++ engine: the lookup fails, quickly, as a store fault."""
    for path in ("/api/v1/nickname/swiftFox", "/api/v1/username/jsmith1"):
        status, seconds = timed_get(cb_server, path)
        assert status == 503 and seconds < KV_TIMEOUT + 1


def test_token_rotation_takes_effect_without_a_restart(cluster, cb_server):
    rotated = "rotated-token-1c9d0a4b"
    env = couchbase_env(cluster)
    run_loaddata(env, "--rotate-token", "--token", rotated)
    try:
        assert wait_until(lambda: cb_server.get("/api/v1/id/1", rotated)[0] == 200, REFRESH + 3)
        assert cb_server.get("/api/v1/id/1", TOKEN)[0] == 401
    finally:
        run_loaddata(env, "--rotate-token", "--token", TOKEN)
    assert wait_until(lambda: cb_server.get("/api/v1/id/1", TOKEN)[0] == 200, REFRESH + 3)
    check_log(cb_server, rotated)


def test_sdk_observability_is_off_unless_asked_for(cluster, loaded):
    """On a connected cluster: the SDK's no-op tracer and meter by default, its own when set."""
    for setting, noop in ((None, True), ("true", False)):
        env = couchbase_env(cluster)
        if setting is not None:
            env["COUCHBASE_SDK_OBSERVABILITY"] = setting
        store = cbconn.CouchbaseStore.from_environ(env)
        try:
            store.wait_connected(10)
            assert store.cluster._impl.observability_instruments.is_noop is noop, setting
            profile = store.get_profile("3")
            assert profile is not None and json.loads(profile)["record_id"] == 3
        finally:
            store.close()


def test_the_core_get_answers_as_the_sdk_get(cluster, loaded):
    """The service's gets skip the SDK's Python wrapper (cbsdk.core_calls) once a check
    against the public get passed: found, missing and refused keys give what the SDK's own
    Collection.get (and get_any_replica, while a node is lost) gives. With observability
    on, the wrapper records every get, so it is not skipped."""
    # No ping in between to undo the lost node set below.
    store = cbconn.CouchbaseStore.from_environ({**couchbase_env(cluster), "COUCHBASE_HEALTH_INTERVAL": "600"})
    try:
        store.wait_connected(10)
        assert wait_until(lambda: store.direct.calls is not None, 5)  # checked at connection: the token is there
        profiles = store.collections["user_data"]
        for lost in (False, True):  # as when a ping finds a node lost: every get asks every copy
            store.health.degraded = lost
            for record_id in ("1", "2", str(COUNT)):
                assert store.get_profile(record_id) == profiles.get(f"user_data:{record_id}").value
            for record_id in (str(COUNT + 1), "0", "abc"):
                with pytest.raises(DocumentNotFoundException):
                    profiles.get(f"user_data:{record_id}")
                assert store.get_profile(record_id) is None
            assert store.get_image("1") == store.collections["user_images"].get("user_images:1").value
        assert store.direct.calls is not None  # still: nothing above was anything but a store answer
    finally:
        store.close()
    store = cbconn.CouchbaseStore.from_environ({**couchbase_env(cluster), "COUCHBASE_SDK_OBSERVABILITY": "on"})
    try:
        store.wait_connected(10)
        assert store.direct.calls is None
        assert store.get_profile("1") is not None
    finally:
        store.close()


# -- faults: each test has its own emulator, since it breaks it ---------------------------
def test_freeze_thaw_and_kill(tmp_path):
    caves = start_caves(tmp_path)
    svc = None
    try:
        env = couchbase_env(caves)
        run_loaddata(env, "--count", "20", "--seed", str(SEED), "--token", TOKEN)
        svc = start_service(env, tmp_path)
        status, _, good = svc.get("/api/v1/id/7", TOKEN)
        assert status == 200

        # Frozen: every answer within the timeout plus a second; liveness unaffected.
        caves.freeze()
        for _ in range(4):
            status, seconds = timed_get(svc, "/api/v1/id/7")
            assert status in (503, 504) and seconds < KV_TIMEOUT + 1
            status, seconds = timed_get(svc, "/healthz", None)
            assert status == 200 and seconds < 0.5
        assert wait_until(lambda: svc.get("/readyz")[0] == 503, 5)

        # Thawed: the same process serves again.
        caves.thaw()
        assert wait_until(lambda: svc.get("/api/v1/id/7", TOKEN)[2] == good, 10)
        assert svc.get("/readyz")[0] == 200

        # Killed: after the health ping notices, 503s come at once.
        caves.kill()
        for _ in range(3):
            status, seconds = timed_get(svc, "/api/v1/id/7")
            assert status in (503, 504) and seconds < KV_TIMEOUT + 1
        time.sleep(KV_TIMEOUT + 1)
        for _ in range(5):
            status, seconds = timed_get(svc, "/api/v1/picture/record/7")
            assert status == 503 and seconds < 0.5  # no wait for a timeout
        assert svc.get("/healthz")[0] == 200
        assert svc.get("/readyz")[0] == 503
    finally:
        if svc:
            svc.stop()
        caves.stop()
    check_log(svc)


def test_start_up_before_the_cluster_answers(tmp_path):
    """Started against a frozen cluster: alive, not ready, 503s; ready after the thaw."""
    caves = start_caves(tmp_path)
    svc = None
    try:
        env = couchbase_env(caves)
        run_loaddata(env, "--count", "5", "--seed", str(SEED), "--token", TOKEN)
        caves.freeze()
        svc = start_service(env, tmp_path, wait_for="/healthz")
        assert svc.get("/readyz")[0] == 503
        status, seconds = timed_get(svc, "/api/v1/id/1")
        assert status == 503 and seconds < 0.5
        # Once the first attempt has timed out, /readyz says so, as the log line does.
        assert wait_until(lambda: b"failed: timeout: " in svc.get("/readyz")[2], 15), svc.get("/readyz")
        why = json.loads(svc.get("/readyz")[2])["message"]["error"]
        assert why.split("not connected: ", 1)[1] in svc.log()
        caves.thaw()
        assert wait_until(lambda: svc.get("/api/v1/id/1", TOKEN)[0] == 200, 15)
        assert svc.get("/readyz")[0] == 200
        assert "couchbase: connected" in svc.log()
    finally:
        if svc:
            svc.stop()
        caves.stop()
    check_log(svc)


def test_credentials_refused_are_the_cause_readyz_names(cluster, loaded, tmp_path):
    """A wrong password: not ready, /readyz naming the refusal in the log line's words; neither
    says the password."""
    env = {**couchbase_env(cluster), "COUCHBASE_PASSWORD": "wrong-password-5d1"}
    svc = start_service(env, tmp_path, wait_for="/healthz")
    try:
        assert wait_until(lambda: b"authentication" in svc.get("/readyz")[2], 15), svc.get("/readyz")
        status, _, body = svc.get("/readyz")
        why = json.loads(body)["message"]["error"]
        assert status == 503 and "authentication: the cluster refused user 'Administrator'" in why, why
        assert why.split("not connected: ", 1)[1] in svc.log()
        assert svc.get("/api/v1/id/1", TOKEN)[0] == 503
    finally:
        svc.stop()
    check_log(svc, "wrong-password-5d1")
