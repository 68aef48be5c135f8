"""Property-based tests (hypothesis) of request-target parsing and routing.

Generated request targets go to the real server over a socket: whatever the
target, the answer is one of SPEC's statuses, in the JSON error shape when it is
an error, and never a 5xx. The parameter decoder is also driven directly.
"""

from __future__ import annotations

import json
import socket
import sys
from urllib.parse import quote

import pytest
from conftest import ROOT, TOKEN, ServiceProcess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import userprofile_service as ups  # noqa: E402

# Every status SPEC names. 503/504 only when the store fails, which it does not here.
SPEC_STATUSES = {200, 400, 401, 404, 405, 408, 413, 414, 431, 503, 504, 505}
SETTINGS = settings(max_examples=200, deadline=3000, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CONTROL = {chr(c) for c in range(0x20)} | {"\x7f"}

ROUTE_PREFIXES = ["/api/v1/id/", "/api/v1/nickname/", "/api/v1/username/", "/api/v1/picture/raw/",
                  "/api/v1/picture/record/", "/api/v1/", "/api/", "/", "/healthz", "/readyz", "/metrics",
                  "/api/v1/openapi.json", "/api/v1/picture/", "http://h/api/v1/id/", "//"]
# Pieces a target is made of: the ones a parser trips on, and any byte at all.
PIECES = st.one_of(
    st.sampled_from(["/", "//", ".", "..", "%", "%2F", "%2f", "%25", "%00", "%0A", "%C3%A9", "%C3", "%E2%82",
                     "%FF", "%G0", "?", "#", "&", "=", ";", "+", "~", "*", "@", ":", "\\", "'", '"', "$1", "1",
                     "0", "-1", "99999999999999999999", "\u00e9", " ", "\t", "\r", "\n", "\x00", "\x7f"]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
    st.binary(max_size=4).map(lambda b: b.decode("latin-1")),
)
TARGETS = st.builds(lambda prefix, pieces: prefix + "".join(pieces),
                    st.one_of(st.sampled_from(ROUTE_PREFIXES), PIECES), st.lists(PIECES, max_size=12))


@pytest.fixture(scope="module")
def service(seeded_db, tmp_path_factory):
    log = tmp_path_factory.mktemp("props") / "service.log"
    svc = ServiceProcess({"USERPROFILE_DB": str(seeded_db)}, "--header-timeout", "2",
                         log_path=log).start(wait_for="/readyz")
    yield svc
    assert svc.proc.poll() is None, "the service died"
    assert svc.get("/healthz")[0] == 200
    svc.stop()
    assert "Traceback" not in svc.log() and TOKEN not in svc.log()
    assert " error: " not in svc.log(), [line for line in svc.log().splitlines() if " error: " in line]


def send(svc: ServiceProcess, target: bytes, method: bytes = b"GET", token: bool = True) -> tuple[int, dict, bytes]:
    """One request with this target on a fresh connection: (status, headers, body)."""
    head = method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    if token:
        head += f"Authorization: Bearer {TOKEN}\r\n".encode()
    with socket.create_connection((svc.host, svc.port), timeout=5) as s:
        s.sendall(head + b"\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head_bytes, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no answer, or a cut one: {data[:200]!r}"
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    if method != b"HEAD":
        assert int(headers["content-length"]) == len(body)
    return int(status_line.split(" ")[1]), headers, body


def check_shape(status: int, headers: dict, body: bytes) -> None:
    assert status in SPEC_STATUSES, status
    assert status < 500 or status in (503, 504), f"a server error: {status} {body[:200]!r}"
    if status >= 400:
        assert headers["content-type"] == "application/json"
        error = json.loads(body)
        assert error["status"] == "failure" and isinstance(error["message"]["error"], str)


@SETTINGS
@given(target=TARGETS)
def test_any_target_gets_a_spec_status_in_the_json_shape(service, target):
    raw = target.encode("utf-8", "surrogateescape")
    if any(b in raw for b in (b" ", b"\r", b"\n")):  # these end the target on the wire: see the next test
        raw = raw.replace(b" ", b"%20").replace(b"\r", b"%0D").replace(b"\n", b"%0A")
    status, headers, body = send(service, raw or b"/")
    check_shape(status, headers, body)
    if any(c < 0x21 or c > 0x7e for c in raw):
        assert status == 400  # a target is visible ASCII


@SETTINGS
@given(request_line=st.binary(max_size=64))
def test_any_request_line_gets_a_spec_status(service, request_line):
    with socket.create_connection((service.host, service.port), timeout=5) as s:
        s.sendall(request_line.replace(b"\n", b" ") + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    if data:  # a line that is only spaces and a CR or so may be taken as a blank line: no answer is due yet
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        check_shape(status, {"content-type": "application/json"} if status >= 400 else {}, body)


@SETTINGS
@given(route=st.sampled_from(["id", "nickname", "username", "picture/raw", "picture/record"]),
       value=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40))
def test_a_percent_encoded_parameter_finds_nothing_or_the_right_thing(service, route, value):
    status, headers, body = send(service, f"/api/v1/{route}/{quote(value, safe='')}".encode())
    check_shape(status, headers, body)
    if CONTROL & set(value):
        assert status == 400
    else:
        assert status in (200, 404), (status, body[:200])
    if status == 200 and route in ("nickname", "username"):
        field = "nickname" if route == "nickname" else "user_id"
        assert {p[field] for p in json.loads(body)} == {value}


@SETTINGS
@given(record_id=st.integers(min_value=-5, max_value=400), encode=st.booleans())
def test_ids_route_to_their_record(service, record_id, encode):
    text = str(record_id)
    target = "/api/v1/id/" + ("".join(f"%{b:02X}" for b in text.encode()) if encode else text)
    status, headers, body = send(service, target.encode())
    if 1 <= record_id <= 300:
        assert status == 200 and json.loads(body)[0]["record_id"] == record_id
    else:
        assert status == 404 and json.loads(body) == {"status": "failure", "message": {"error": "Not Found"}}


@SETTINGS
@given(method=st.from_regex(r"[A-Z]{1,20}", fullmatch=True), target=st.sampled_from(ROUTE_PREFIXES[:5]),
       token=st.booleans())
def test_methods_route_by_spec(service, method, target, token):
    status, headers, body = send(service, (target + "1").encode(), method=method.encode(), token=token)
    check_shape(status, headers, body)
    if method in ("GET", "HEAD"):
        assert status == (200 if token else 401)
    else:
        assert status == 405 and headers["allow"] == "GET, HEAD"


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(raw=st.text(max_size=30))
def test_decode_param_returns_text_or_raises_400(raw):
    try:
        value = ups.decode_param(raw)
    except ups.HTTPError as err:
        assert err.status == 400
        return
    assert isinstance(value, str)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(value=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30))
def test_decode_param_inverts_percent_encoding(value):
    encoded = quote(value, safe="")
    if CONTROL & set(value):
        with pytest.raises(ups.HTTPError):
            ups.decode_param(encoded)
    else:
        assert ups.decode_param(encoded) == value
