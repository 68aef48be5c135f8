"""What answers say to caches and clients, over real sockets: Cache-Control on every answer,
the ETag and 304, gzip where it pays, nosniff, the Bearer error, Retry-After and 501."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import sqlite3
import zlib

import pytest
from conftest import TOKEN

from testkit import ROOT, ServiceProcess

pytestmark = pytest.mark.socket

AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Each route, a path of it that answers 200, and the Cache-Control of its answers.
ROUTES = [
    ("/api/v1/id/1", "private, no-cache"),
    ("/api/v1/nickname/shadowGecko", "private, no-cache"),
    ("/api/v1/username/jmartinez1", "private, no-cache"),
    ("/api/v1/picture/record/1", "private, max-age=600"),
    ("/api/v1/picture/raw/1", "private, max-age=600"),
    ("/healthz", "no-store"),
    ("/readyz", "no-store"),
    ("/metrics", "no-store"),
    ("/api/v1/openapi.json", "no-cache"),
]
STRONG_TAG = re.compile(r'"[0-9a-f]{8}"')


def get(server, path, **headers):
    return server.get(path, headers={**AUTH, **headers})


@pytest.mark.parametrize("path, cache_control", ROUTES)
def test_every_answer_says_what_caches_may_do(server, path, cache_control):
    for method in ("GET", "HEAD"):
        status, headers, body = server.get(path, TOKEN, method=method)
        assert status == 200, (method, path)
        assert headers["Cache-Control"] == cache_control
        assert headers["X-Content-Type-Options"] == "nosniff"
        if path.startswith("/api/v1/"):
            assert STRONG_TAG.fullmatch(headers["ETag"]), headers["ETag"]
            if method == "GET":
                assert headers["ETag"] == f'"{zlib.crc32(body):08x}"'
        else:
            assert "ETag" not in headers


@pytest.mark.parametrize(
    "path, method",
    [("/api/v1/id/999999", "GET"), ("/nowhere", "GET"), ("/api/v1/id/1", "POST"), ("/api/v1/id/%zz", "GET")],
)
def test_errors_are_never_stored(server, path, method):
    status, headers, _ = server.get(path, TOKEN, method=method)
    assert status >= 400
    assert headers["Cache-Control"] == "no-store" and headers["X-Content-Type-Options"] == "nosniff"
    assert "ETag" not in headers
    status, headers, _ = server.get("/api/v1/id/1")  # no token
    assert status == 401 and headers["Cache-Control"] == "no-store"


def test_a_conditional_get_with_the_etag_is_a_304_without_a_body(server):
    conn = server.connection()
    try:
        conn.request("GET", "/api/v1/id/3", headers=AUTH)
        first = conn.getresponse()
        body, tag = first.read(), first.headers["ETag"]
        for if_none_match in (tag, f"W/{tag}", f'"00000000", {tag}', "*"):
            for method in ("GET", "HEAD"):
                conn.request(method, "/api/v1/id/3", headers={**AUTH, "If-None-Match": if_none_match})
                answer = conn.getresponse()
                assert answer.status == 304 and answer.read() == b"", (if_none_match, method)
                assert answer.headers["ETag"] == tag and answer.headers["Cache-Control"] == "private, no-cache"
                assert "Content-Length" not in answer.headers and "Content-Type" not in answer.headers
        # The same connection goes on: a 304 has no body to frame.
        conn.request("GET", "/api/v1/id/3", headers={**AUTH, "If-None-Match": '"00000000"'})  # stale
        answer = conn.getresponse()
        assert answer.status == 200 and answer.read() == body and answer.headers["ETag"] == tag
        conn.request("GET", "/api/v1/id/4", headers={**AUTH, "If-None-Match": tag})  # another record's tag
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_every_lookup_answers_304_to_its_own_etag(server):
    for path, _ in ROUTES:
        if path.startswith("/api/v1/"):
            status, headers, _ = get(server, path)
            assert status == 200
            assert get(server, path, **{"If-None-Match": headers["ETag"]})[0] == 304, path


def test_a_304_only_after_the_token_check(server):
    tag = get(server, "/api/v1/id/1")[1]["ETag"]
    status, _, _ = server.get("/api/v1/id/1", headers={"If-None-Match": tag})
    assert status == 401
    status, _, _ = server.get("/api/v1/id/1", "wrong", headers={"If-None-Match": "*"})
    assert status == 401


@pytest.mark.parametrize(
    "headers, challenge",
    [
        ({}, 'Bearer realm="userprofile"'),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 'Bearer realm="userprofile"'),  # no Bearer token given
        ({"Authorization": "Bearer wrong"}, 'Bearer realm="userprofile", error="invalid_token"'),
        ({"x-access-token": TOKEN[:-1]}, 'Bearer realm="userprofile", error="invalid_token"'),
    ],
)
def test_a_wrong_token_is_told_so_and_a_missing_one_only_challenged(server, headers, challenge):
    status, hdrs, _ = server.get("/api/v1/id/1", headers=headers)
    assert status == 401 and hdrs["WWW-Authenticate"] == challenge


def test_openapi_json_is_gzip_when_accepted_and_the_two_have_their_own_etags(server):
    plain = (ROOT / "openapi.json").read_bytes()
    status, headers, body = server.get("/api/v1/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(body) == plain and len(body) < len(plain) / 4
    gzip_tag = headers["ETag"]
    status, headers, body = server.get("/api/v1/openapi.json")
    assert status == 200 and body == plain and "Content-Encoding" not in headers
    assert headers["Vary"] == "Accept-Encoding" and headers["ETag"] != gzip_tag
    # Each tag names its own representation.
    status, headers, body = server.get(
        "/api/v1/openapi.json", headers={"Accept-Encoding": "gzip", "If-None-Match": gzip_tag}
    )
    assert status == 304 and body == b"" and headers["ETag"] == gzip_tag and headers["Vary"] == "Accept-Encoding"
    assert "Content-Encoding" not in headers  # nothing of a body in a 304 (RFC 9110 15.4.5)
    assert server.get("/api/v1/openapi.json", headers={"If-None-Match": gzip_tag})[0] == 200
    for refusing in ("gzip;q=0", "gzip;q=0, *", "br", "identity"):
        status, headers, body = server.get("/api/v1/openapi.json", headers={"Accept-Encoding": refusing})
        assert body == plain and "Content-Encoding" not in headers, refusing


def test_metrics_are_gzip_when_accepted(server):
    status, headers, body = server.get("/metrics", headers={"Accept-Encoding": "deflate, gzip;q=0.5"})
    assert status == 200 and headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
    assert b"# TYPE userprofile_requests_total counter" in gzip.decompress(body)
    status, headers, body = server.get("/metrics", headers={"Accept-Encoding": "*;q=0"})
    assert "Content-Encoding" not in headers and body.startswith(b"# HELP")


@pytest.mark.parametrize("path", ["/api/v1/id/1", "/api/v1/picture/raw/1", "/api/v1/picture/record/1", "/healthz"])
def test_small_json_and_images_are_never_compressed(server, path):
    status, headers, _ = get(server, path, **{"Accept-Encoding": "gzip"})
    assert status == 200 and "Content-Encoding" not in headers and "Vary" not in headers


@pytest.mark.parametrize("method, status", [("BREW", 501), ("PROPFIND", 501), ("PATCH", 405), ("QUERY", 405)])
def test_a_method_the_server_does_not_know_is_501_a_known_one_405(server, method, status):
    got, headers, body = server.get("/api/v1/id/1", TOKEN, method=method)
    assert got == status, method
    assert ("Allow" in headers) == (status == 405)
    assert json.loads(body)["status"] == "failure"
    assert server.get("/nowhere", TOKEN, method=method)[0] == (501 if status == 501 else 404)


def test_the_picture_max_age_and_retry_after_are_settings(seeded_db, tmp_path):
    db = tmp_path / "u.db"
    shutil.copy(seeded_db, db)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM service_auth")  # no token: the API answers 503
    svc = ServiceProcess(
        {"USERPROFILE_DB": str(db), "RETRY_AFTER_SECONDS": "7"}, "--picture-max-age", "42", log_path=tmp_path / "log"
    ).start()
    try:
        status, headers, _ = svc.get("/api/v1/picture/raw/1", TOKEN)
        assert status == 503 and headers["Retry-After"] == "7" and headers["Cache-Control"] == "no-store"
        status, headers, _ = svc.get("/readyz")
        assert status == 503 and headers["Retry-After"] == "7"
    finally:
        svc.stop()
    svc = ServiceProcess(
        {"USERPROFILE_DB": str(seeded_db)}, "--picture-max-age", "42", log_path=tmp_path / "log2"
    ).start()
    try:
        for path in ("/api/v1/picture/raw/1", "/api/v1/picture/record/1"):
            status, headers, _ = svc.get(path, TOKEN)
            assert status == 200 and headers["Cache-Control"] == "private, max-age=42", path
    finally:
        svc.stop()
