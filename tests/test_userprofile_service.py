"""The HTTP API, against the real service process over real sockets."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import zlib

import pytest
from conftest import COUNT, TOKEN

from testkit import LAYOUT, ROOT, ServiceProcess, free_port, run_loaddata
from testkit.caves import CREDENTIALS

pytestmark = pytest.mark.socket

NOT_FOUND = {"status": "failure", "message": {"error": "Not Found"}}


def stored(db, collection: str, key: str) -> bytes:
    """The document bytes exactly as the store holds them."""
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT doc FROM {collection} WHERE key = ?", (key,)).fetchone()[0]


def raw_exchange(svc: ServiceProcess, data: bytes, timeout: float = 5) -> bytes:
    """Send bytes on a fresh socket and read until the server closes it."""
    with socket.create_connection((svc.host, svc.port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


# -- lookups ------------------------------------------------------------------
def test_id_returns_the_stored_profile_bytes_in_an_array(server, seeded_db):
    status, headers, body = server.get("/api/v1/id/1", TOKEN)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    # The handler passes the stored JSON through: the body is those exact bytes.
    assert body == b"[" + stored(seeded_db, LAYOUT.profiles, f"{LAYOUT.profiles}:1") + b"]"
    [profile] = json.loads(body)
    assert profile["record_id"] == 1
    assert set(profile) == {
        "record_id",
        "name",
        "nickname",
        "picture",
        "user_id",
        "email",
        "email_verified",
        "first_name",
        "last_name",
        "address",
        "city",
        "state",
        "zip_code",
        "phone",
        "date_of_birth",
    }


def test_every_generated_id_is_found_and_the_next_is_not(server):
    assert server.get(f"/api/v1/id/{COUNT}", TOKEN)[0] == 200
    status, _, body = server.get(f"/api/v1/id/{COUNT + 1}", TOKEN)
    assert (status, json.loads(body)) == (404, NOT_FOUND)


def test_nickname_returns_every_profile_sharing_it(server, seeded_db):
    with sqlite3.connect(seeded_db) as conn:
        nickname, shared = conn.execute(
            f"SELECT nickname, count(*) AS n FROM {LAYOUT.profiles} GROUP BY nickname ORDER BY n DESC LIMIT 1"
        ).fetchone()
    assert shared > 1, "the generator should repeat nicknames"
    status, _, body = server.get(f"/api/v1/nickname/{nickname}", TOKEN)
    profiles = json.loads(body)
    assert status == 200
    assert len(profiles) == shared
    assert {p["nickname"] for p in profiles} == {nickname}
    assert [p["record_id"] for p in profiles] == sorted(p["record_id"] for p in profiles)


def test_username_returns_the_one_profile(server):
    [profile] = json.loads(server.get("/api/v1/id/17", TOKEN)[2])
    status, _, body = server.get(f"/api/v1/username/{profile['user_id']}", TOKEN)
    assert status == 200
    assert json.loads(body) == [profile]
    assert server.get("/api/v1/username/nobody-by-this-name", TOKEN)[0] == 404
    assert server.get("/api/v1/nickname/nobodyByThisName", TOKEN)[0] == 404


def test_picture_record_and_raw(server, seeded_db):
    status, _, body = server.get("/api/v1/picture/record/5", TOKEN)
    assert status == 200
    assert body == b"[" + stored(seeded_db, LAYOUT.images, f"{LAYOUT.images}:5") + b"]"
    [record] = json.loads(body)

    status, headers, raw = server.get("/api/v1/picture/raw/5", TOKEN)
    assert status == 200
    assert headers["Content-Type"] == f"image/{record['type']}" == "image/png"
    # A real PNG: signature, a well-formed IHDR, and image data that inflates.
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", raw[16:24])
    assert (width, height) == (40, 40)
    idat_at = raw.index(b"IDAT")
    (length,) = struct.unpack(">I", raw[idat_at - 4 : idat_at])
    assert len(zlib.decompress(raw[idat_at + 4 : idat_at + 4 + length])) == height * (1 + 3 * width)
    assert server.get("/api/v1/picture/raw/999999", TOKEN)[0] == 404
    assert server.get("/api/v1/picture/record/999999", TOKEN)[0] == 404


def test_percent_decoded_utf8_parameters_and_ignored_query(server):
    [profile] = json.loads(server.get("/api/v1/id/3", TOKEN)[2])
    assert server.get("/api/v1/id/%33?pretty=1&x=%zz", TOKEN)[2] == server.get("/api/v1/id/3", TOKEN)[2]
    nickname = profile["nickname"]
    encoded = "".join(f"%{b:02X}" for b in nickname.encode())
    assert server.get(f"/api/v1/nickname/{encoded}", TOKEN)[0] == 200
    assert server.get("/api/v1/nickname/Zo%C3%AB", TOKEN)[0] == 404  # valid UTF-8, no such nickname


# -- authentication -------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN[:-1]}X"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {TOKEN}"},
        {"x-access-token": "wrong"},
    ],
)
def test_missing_or_wrong_token_is_401_with_a_bearer_challenge(server, headers):
    status, hdrs, body = server.get("/api/v1/id/1", headers=headers)
    assert status == 401
    assert hdrs["WWW-Authenticate"].startswith("Bearer")
    assert json.loads(body) == {"status": "failure", "message": {"error": "Unauthorized"}}


def test_token_accepted_in_x_access_token_and_any_case_of_bearer(server):
    assert server.get("/api/v1/id/1", headers={"x-access-token": TOKEN})[0] == 200
    assert server.get("/api/v1/id/1", headers={"authorization": f"bearer {TOKEN}"})[0] == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"])
def test_operational_routes_need_no_token(server, path):
    assert server.get(path)[0] == 200


# -- protocol -------------------------------------------------------------------
def test_unknown_paths_are_404_in_the_json_shape(server):
    paths = ["/", "/api", "/api/v1/id", "/api/v1/id/1/extra", "/api/v2/id/1", "/api/v1/picture/x/1", "/favicon.ico"]
    for path in paths:
        status, headers, body = server.get(path, TOKEN)
        assert status == 404, path
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body) == NOT_FOUND
    assert server.get("/api/v1/id/", TOKEN)[0] == 404  # an empty parameter finds nothing


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_on_a_route_are_405_with_allow(server, method):
    for path in ["/api/v1/id/1", "/api/v1/picture/raw/1", "/healthz"]:
        status, headers, body = server.get(path, TOKEN, method=method)
        assert status == 405, (method, path)
        assert headers["Allow"] == "GET, HEAD"
        assert json.loads(body)["message"]["error"] == "Method Not Allowed"
    assert server.get("/nowhere", TOKEN, method=method)[0] == 404


def test_head_answers_like_get_without_a_body(server):
    get_status, _get_headers, get_body = server.get("/api/v1/id/2", TOKEN)
    conn = server.connection()
    conn.request("HEAD", "/api/v1/id/2", headers={"Authorization": f"Bearer {TOKEN}"})
    resp = conn.getresponse()
    assert resp.status == get_status == 200
    assert int(resp.headers["Content-Length"]) == len(get_body)
    assert resp.read() == b""
    conn.request("GET", "/api/v1/id/2", headers={"Authorization": f"Bearer {TOKEN}"})  # same connection
    assert conn.getresponse().read() == get_body
    conn.close()


def test_keep_alive_serves_many_requests_on_one_connection(server):
    conn = server.connection()
    conn.request("GET", "/healthz")
    first = conn.getresponse()
    first.read()
    sock = conn.sock
    for i in range(1, 51):
        conn.request("GET", f"/api/v1/id/{i}", headers={"Authorization": f"Bearer {TOKEN}"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read())[0]["record_id"] == i
        assert conn.sock is sock, "the connection was not kept alive"
    conn.request("GET", "/api/v1/id/99999", headers={"Authorization": f"Bearer {TOKEN}"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 404 and conn.sock is sock  # an error answer keeps the connection too
    conn.close()


def test_pipelined_requests_are_answered_in_order(server):
    request = f"GET /api/v1/id/{{}} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    data = "".join(request.format(i) for i in (1, 2, 3)).encode()
    data += b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = raw_exchange(server, data)
    assert answer.count(b"HTTP/1.1 200 OK") == 4
    assert answer.index(b'"record_id":1,') < answer.index(b'"record_id":2,') < answer.index(b'"record_id":3,')
    assert b"Connection: close" in answer


def test_http10_closes_unless_asked_to_keep_alive(server):
    answer = raw_exchange(server, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in answer
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        time.sleep(0.2)
        first = s.recv(65536)
        assert b"Connection: keep-alive" in first
        s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200 OK")


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET /api/v1/id/%ZZ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /api/v1/nickname/%C3%28 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /api/v1/nickname/a%00b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /healthz\r\n\r\n", 400),
        (b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ],
)
def test_malformed_requests_get_a_clear_4xx_in_json(server, request_bytes, status):
    token_header = f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n".encode()
    request_bytes = request_bytes.replace(b"Host: x\r\n", b"Host: x\r\n" + token_header)
    answer = raw_exchange(server, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert json.loads(body)["status"] == "failure"
    assert server.get("/healthz")[0] == 200  # and the service keeps serving


# -- readiness and token ------------------------------------------------------------
def test_a_store_fault_is_a_fast_503_and_the_service_recovers_by_itself(seeded_db, tmp_path):
    db = tmp_path / "u.db"
    shutil.copy(seeded_db, db)
    svc = ServiceProcess({"USERPROFILE_DB": str(db)}, log_path=tmp_path / "log").start(wait_for="/readyz")
    try:
        healthy = db.read_bytes()
        db.write_bytes(b"\0" * len(healthy))  # the store's file is overwritten in place: a broken disk
        statuses = []
        for record_id in range(200, 210):
            started = time.monotonic()
            status, _, body = svc.get(f"/api/v1/id/{record_id}", TOKEN)
            assert time.monotonic() - started < 3
            statuses.append(status)
        assert statuses[-1] == 503, statuses  # pages already cached may still answer at first
        assert json.loads(body) == {"status": "failure", "message": {"error": "Service Unavailable"}}
        assert svc.get("/readyz")[0] == 503
        assert svc.get("/healthz")[0] == 200
        db.write_bytes(healthy)  # the store comes back: the service recovers without a restart
        assert svc.get("/readyz")[0] == 200
        assert svc.get("/api/v1/id/1", TOKEN)[0] == 200
        metrics = svc.get("/metrics")[2].decode()
        assert 'userprofile_store_errors_total{kind="unavailable"}' in metrics
        assert 'userprofile_store_errors_total{kind="unavailable"} 0' not in metrics
    finally:
        assert svc.stop() == 0
    assert "store unavailable" in svc.log()
    assert "Traceback" not in svc.log() and TOKEN not in svc.log()


def test_without_a_token_in_the_store_the_api_refuses_with_503(tmp_path):
    db = tmp_path / "empty.db"
    run_loaddata({"USERPROFILE_DB": str(db)}, "--count", "3", "--token", "t")
    with sqlite3.connect(db) as conn:
        conn.execute(f"DELETE FROM {LAYOUT.auth}")
    svc = ServiceProcess({"USERPROFILE_DB": str(db)}, log_path=tmp_path / "log").start()
    try:
        status, _, body = svc.get("/api/v1/id/1", "t")
        assert status == 503 and b"token" in body
        status, _, body = svc.get("/readyz")
        assert status == 503 and json.loads(body)["message"]["error"] == (
            "Service Unavailable: token: service_auth:1 has no token; the API answers 503 (run loaddata.py)"
        )
    finally:
        svc.stop()
    assert "service_auth:1 has no token" in svc.log()


def test_a_rotated_token_takes_effect_without_a_restart(seeded_db, tmp_path):
    """loaddata.py --rotate-token: within TOKEN_REFRESH_SECONDS (plus a busy machine's margin) the
    old token is refused and the new one in force, with no restart."""
    db = tmp_path / "u.db"
    shutil.copy(seeded_db, db)
    refresh = 1.0
    svc = ServiceProcess({"USERPROFILE_DB": str(db)}, "--token-refresh", str(refresh), log_path=tmp_path / "log")
    svc.start(wait_for="/readyz")
    try:
        assert svc.get("/api/v1/id/1", TOKEN)[0] == 200
        out = run_loaddata({"USERPROFILE_DB": str(db)}, "--rotate-token", "--token", "rotated-token-2").stdout
        assert "token rotated" in out and "rotated-token-2" not in out  # printed only with --show-token
        rotated = time.monotonic()
        while svc.get("/api/v1/id/1", TOKEN)[0] != 401:
            assert time.monotonic() - rotated < refresh + 2, "the old token is still accepted"
            time.sleep(0.05)
        assert svc.get("/api/v1/id/1", "rotated-token-2")[0] == 200
    finally:
        svc.stop()
    assert "rotated token" in svc.log() and "rotated-token-2" not in svc.log()


# -- process -------------------------------------------------------------------------
def read_answer(sock: socket.socket) -> bytes:
    """One whole answer (headers and Content-Length bytes of body) from a blocking socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"Content-Length: (\d+)", head)
    assert found, f"no Content-Length: {head!r}"
    length = int(found.group(1))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed in the body"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_sigterm_drains_without_losing_a_request_then_exits_0(seeded_db, tmp_path):
    """Not ready at once; still accepting; the request in flight, the next request on an open
    keep-alive connection and a new connection are all answered, each with Connection: close; a
    connection idle for DRAIN_IDLE_SECONDS is closed; the process ends when none is left."""
    svc = ServiceProcess(
        {"USERPROFILE_DB": str(seeded_db), "DRAIN_IDLE_SECONDS": "1.5", "SHUTDOWN_GRACE_SECONDS": "20"},
        log_path=tmp_path / "log",
    ).start()
    assert svc.proc is not None  # started
    get = f"GET /api/v1/id/9 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    idle, kept = (socket.create_connection((svc.host, svc.port), timeout=5) for _ in range(2))
    for sock in (idle, kept):
        sock.sendall(get)
        assert b"Connection: close" not in read_answer(sock)  # now open keep-alive connections
    busy = socket.create_connection((svc.host, svc.port), timeout=5)
    busy.sendall(get[:-2])  # in flight: its headers are not finished
    time.sleep(0.3)
    signalled = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    status, headers, _ = svc.get("/readyz")  # a new connection is still accepted
    assert (status, headers["Connection"]) == (503, "close")
    kept.sendall(get)
    answer = read_answer(kept)
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in answer and b'"record_id":9,' in answer
    assert kept.recv(4096) == b""
    busy.sendall(b"\r\n")
    answer = read_answer(busy)
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in answer
    assert busy.recv(4096) == b""
    assert idle.recv(4096) == b""  # closed once it had idled 1.5 s, not at the signal
    assert 1.0 < time.monotonic() - signalled < 3.5
    assert svc.proc.wait(10) == 0
    assert time.monotonic() - signalled < 5, "it ended with the last connection, not at the grace period"
    assert "stopped" in svc.log()


def test_sigterm_answers_a_connection_still_in_the_accept_queue(seeded_db, tmp_path):
    svc = ServiceProcess({"USERPROFILE_DB": str(seeded_db)}, log_path=tmp_path / "log").start()
    assert svc.proc is not None  # started
    svc.proc.send_signal(signal.SIGSTOP)  # the kernel still queues connections while it is stopped
    try:
        queued = socket.create_connection((svc.host, svc.port), timeout=10)
        queued.sendall(f"GET /api/v1/id/3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        svc.proc.send_signal(signal.SIGTERM)
    finally:
        svc.proc.send_signal(signal.SIGCONT)
    answer = read_answer(queued)
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in answer
    assert svc.proc.wait(10) == 0


def test_sigterm_closes_what_is_left_at_the_grace_period(seeded_db, tmp_path):
    svc = ServiceProcess(
        {"USERPROFILE_DB": str(seeded_db), "SHUTDOWN_GRACE_SECONDS": "1.5", "DRAIN_IDLE_SECONDS": "60"},
        log_path=tmp_path / "log",
    ).start()
    assert svc.proc is not None  # started
    idle = socket.create_connection((svc.host, svc.port), timeout=10)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    read_answer(idle)
    signalled = time.monotonic()
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(10) == 0
    assert idle.recv(4096) == b""
    assert 1.0 < time.monotonic() - signalled < 2.5  # what is left is closed just before the grace ends
    assert "1 connections still open after 1.5s" in svc.log()


def catches(pid: int, sig: int) -> bool:
    """Whether the process has a handler for this signal (SigCgt in /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        found = re.search(r"^SigCgt:\s+([0-9a-f]+)", f.read(), re.M)
    assert found, f"no SigCgt line for process {pid}"
    caught = int(found.group(1), 16)
    return bool(caught & (1 << (sig - 1)))


def test_sigterm_during_start_up_is_honoured(tmp_path):
    """As PID 1 in a container, a signal without a handler is dropped: the handler must be
    in place before start-up's slow parts (here, loading the Couchbase SDK), and honoured."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "userprofile_service.py"), "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "COUCHBASE_HOST": "127.0.0.1:1", **CREDENTIALS, "COUCHBASE_CONNECT_TIMEOUT": "1"},
    )
    try:
        deadline = time.monotonic() + 20
        while not catches(proc.pid, signal.SIGTERM):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.002)
        with pytest.raises(OSError):  # still starting: not listening yet
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None  # stderr=PIPE
    log = proc.stderr.read().decode()
    assert code == 0, log
    assert "SIGTERM" in log and "serving on" not in log and "Traceback" not in log, log


def run_service(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "userprofile_service.py"), *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_bad_configuration_is_a_clear_error(tmp_path):
    result = run_service({"SERVICE_PORT": "eighty", "USERPROFILE_DB": str(tmp_path / "u.db")})
    assert result.returncode == 2
    assert "error: SERVICE_PORT: invalid int value: 'eighty'" in result.stderr  # the variable, not a flag never passed
    result = run_service({"USERPROFILE_DB": str(tmp_path / "u.db")}, "--workers", "0")
    assert result.returncode == 2 and "--workers must be at least 1" in result.stderr


def test_port_taken_is_a_clear_error(server, tmp_path):
    result = run_service({"USERPROFILE_DB": str(tmp_path / "u.db")}, "--host", server.host, "--port", str(server.port))
    assert result.returncode == 1
    assert f"cannot listen on {server.host}:{server.port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_two_workers_share_one_port(seeded_db, tmp_path):
    svc = ServiceProcess({"USERPROFILE_DB": str(seeded_db)}, "--workers", "2", log_path=tmp_path / "log")
    svc.start(wait_for="/readyz")
    try:
        for i in range(1, 41):
            assert svc.get(f"/api/v1/id/{i}", TOKEN)[0] == 200
        assert svc.log().count("serving on") == 2
    finally:
        assert svc.stop() == 0


def test_a_client_that_vanishes_mid_request_does_not_hurt(server):
    for partial in (b"GET /api/v1/id/1 HTTP/1.1\r\nHost: x", b"GET /api/v1/i", b"\x16\x03\x01\x02\x00"):
        s = socket.create_connection((server.host, server.port), timeout=5)
        s.sendall(partial)
        s.close()
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    conn.request("GET", "/api/v1/id/1", headers={"Authorization": f"Bearer {TOKEN}"})
    assert conn.getresponse().status == 200
