"""Property-based tests (hypothesis) of request-line parsing and routing.

Generated request lines and targets go to the real server over a socket: each
gets exactly one answer, with a status that input can get, in the JSON error
shape when it is an error. The store is healthy and every request is short and
sent at once, so no 5xx of any kind (503 and 504 included), no 408, 413, 414 or
431 can be due. The parameter decoder is also driven directly.
"""

from __future__ import annotations

import json
import re
import socket
from urllib.parse import quote

import pytest
from conftest import TOKEN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import answers
import httpparse
import routes
from testkit import ServiceProcess

SETTINGS = settings(
    max_examples=200,
    deadline=3000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
CONTROL = {chr(c) for c in range(0x20)} | {"\x7f"}
# RFC 9112 3: request-line = method SP request-target SP HTTP-version (method a token, the target visible ASCII)
REQUEST_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP/[0-9]\.[0-9]")
ABSOLUTE_FORM = re.compile(rb"https?://", re.IGNORECASE)

ROUTE_PREFIXES = [
    "/api/v1/id/",
    "/api/v1/nickname/",
    "/api/v1/username/",
    "/api/v1/picture/raw/",
    "/api/v1/picture/record/",
    "/api/v1/",
    "/api/",
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/openapi.json",
    "/api/v1/picture/",
    "http://h/api/v1/id/",
    "//",
]
# Pieces a target is made of: the ones a parser trips on, and any byte at all.
PIECES = st.one_of(
    st.sampled_from(
        [
            "/",
            "//",
            ".",
            "..",
            "%",
            "%2F",
            "%2f",
            "%25",
            "%00",
            "%0A",
            "%C3%A9",
            "%C3",
            "%E2%82",
            "%FF",
            "%G0",
            "?",
            "#",
            "&",
            "=",
            ";",
            "+",
            "~",
            "*",
            "@",
            ":",
            "\\",
            "'",
            '"',
            "$1",
            "1",
            "0",
            "-1",
            "99999999999999999999",
            "\u00e9",
            " ",
            "\t",
            "\r",
            "\n",
            "\x00",
            "\x7f",
        ]
    ),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
    st.binary(max_size=4).map(lambda b: b.decode("latin-1")),
)
TARGETS = st.builds(
    lambda prefix, pieces: prefix + "".join(pieces),
    st.one_of(st.sampled_from(ROUTE_PREFIXES), PIECES),
    st.lists(PIECES, max_size=12),
)


@pytest.fixture(scope="module")
def service(seeded_db, tmp_path_factory):
    log = tmp_path_factory.mktemp("props") / "service.log"
    svc = ServiceProcess({"USERPROFILE_DB": str(seeded_db)}, "--header-timeout", "2", log_path=log).start(
        wait_for="/readyz"
    )
    yield svc
    assert svc.proc is not None and svc.proc.poll() is None, "the service died"
    assert svc.get("/healthz")[0] == 200
    svc.stop()
    assert "Traceback" not in svc.log() and TOKEN not in svc.log()
    assert " error: " not in svc.log(), [line for line in svc.log().splitlines() if " error: " in line]


def exchange(svc: ServiceProcess, data: bytes, head: bool = False) -> tuple[int, dict, bytes]:
    """Send the bytes on a fresh connection and read until the server closes it: the one answer
    it must hold, as (status, headers, body). ``head``: the answer may be one to a HEAD, bodiless."""
    with socket.create_connection((svc.host, svc.port), timeout=5) as s:
        s.sendall(data)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    head_bytes, sep, body = received.partition(b"\r\n\r\n")
    assert sep, f"no answer, or one cut before the end of its headers: {received[:200]!r}"
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    assert re.fullmatch(r"HTTP/1\.1 \d{3} .+", status_line), status_line
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    # What follows the headers is this answer's body (none after a HEAD): a second answer would show here.
    assert len(body) == int(headers["content-length"]) or (head and body == b""), received[:300]
    return int(status_line.split(" ")[1]), headers, body


def send(svc: ServiceProcess, target: bytes, method: bytes = b"GET", token: bool = True) -> tuple[int, dict, bytes]:
    """One request with this target on a fresh connection: (status, headers, body)."""
    head = method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    if token:
        head += f"Authorization: Bearer {TOKEN}\r\n".encode()
    return exchange(svc, head + b"\r\n", head=method == b"HEAD")


def check_shape(status: int, headers: dict, body: bytes, allowed: set[int], head: bool = False) -> None:
    """A status this input can get, and an error in the JSON shape (the body unless it answers a HEAD)."""
    assert status in allowed, f"status {status}, expected one of {sorted(allowed)}: {body[:200]!r}"
    if status >= 400:
        assert headers["content-type"] == "application/json", headers
        if not (head and body == b""):
            error = json.loads(body)
            assert error["status"] == "failure" and isinstance(error["message"]["error"], str), error


@pytest.mark.socket
@SETTINGS
@given(target=TARGETS)
def test_any_target_gets_a_spec_status_in_the_json_shape(service, target):
    raw = target.encode("utf-8", "surrogateescape")
    if any(b in raw for b in (b" ", b"\r", b"\n")):  # these end the target on the wire: see the next test
        raw = raw.replace(b" ", b"%20").replace(b"\r", b"%0D").replace(b"\n", b"%0A")
    raw = raw or b"/"
    status, headers, body = send(service, raw)
    check_shape(status, headers, body, {200, 400, 404})  # a GET with the token: found, refused or not found
    if any(c < 0x21 or c > 0x7E for c in raw):
        assert status == 400  # a target is visible ASCII
    elif not raw.startswith(b"/") and not ABSOLUTE_FORM.match(raw):
        assert status == 400  # neither origin-form nor absolute-form (RFC 9112 3.2)


# Request lines near the grammar (a method, a target and a version, with the separators a parser trips on)
# as well as any bytes at all. A line feed would end the line early on the wire, so it becomes a space.
NEAR_LINES = st.builds(
    lambda parts, seps: b"".join(p + s for p, s in zip(parts, seps, strict=True)),
    st.tuples(
        st.sampled_from([b"GET", b"HEAD", b"POST", b"get", b"G\x00T", b"", b"GET1", b"A" * 21]),
        st.sampled_from([b"/healthz", b"/api/v1/id/1", b"/nope", b"*", b"http://h/healthz", b"", b"/\xff"]),
        st.sampled_from(
            [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"HTTP/3.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1.1\r", b"HTTP/11", b""]
        ),
    ),
    st.tuples(
        st.sampled_from([b" ", b"  ", b"\t", b"\r", b""]),
        st.sampled_from([b" ", b"  ", b"\t", b""]),
        st.sampled_from([b"", b" ", b"\r"]),
    ),
)


@pytest.mark.socket
@SETTINGS
@given(request_line=st.one_of(st.binary(max_size=64), NEAR_LINES))
def test_any_request_line_gets_one_answer_with_a_spec_status(service, request_line):
    """Whatever the line, one answer, then the connection closes.

    A server may skip a blank line before a request (RFC 9112 2.2), so an empty
    line here may be passed over; but then "Host: x" is read as the request line
    and refused. Whether skipped or not, every input is due exactly one answer.
    """
    line = request_line.replace(b"\n", b" ")
    head = line.startswith(b"HEAD")
    status, headers, body = exchange(service, line + b"\r\nHost: x\r\nConnection: close\r\n\r\n", head)
    check_shape(status, headers, body, {200, 400, 401, 404, 405, 505}, head)
    if not REQUEST_LINE.fullmatch(line):
        parts = line.split(b" ")
        http2 = len(parts) == 3 and parts[2][:6] in (b"HTTP/2", b"HTTP/3")
        assert status == 400 or (status == 505 and http2), (status, line)


@pytest.mark.socket
@SETTINGS
@given(
    route=st.sampled_from(["id", "nickname", "username", "picture/raw", "picture/record"]),
    value=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=40),
)
def test_a_percent_encoded_parameter_finds_nothing_or_the_right_thing(service, route, value):
    status, headers, body = send(service, f"/api/v1/{route}/{quote(value, safe='')}".encode())
    check_shape(status, headers, body, {200, 400, 404})
    if CONTROL & set(value):
        assert status == 400
    else:
        assert status in (200, 404), (status, body[:200])
    if status == 200 and route in ("nickname", "username"):
        field = "nickname" if route == "nickname" else "user_id"
        assert {p[field] for p in json.loads(body)} == {value}


@pytest.mark.socket
@SETTINGS
@given(record_id=st.integers(min_value=-5, max_value=400), encode=st.booleans())
def test_ids_route_to_their_record(service, record_id, encode):
    text = str(record_id)
    target = "/api/v1/id/" + ("".join(f"%{b:02X}" for b in text.encode()) if encode else text)
    status, _headers, body = send(service, target.encode())
    if 1 <= record_id <= 300:
        assert status == 200 and json.loads(body)[0]["record_id"] == record_id
    else:
        assert status == 404 and json.loads(body) == {"status": "failure", "message": {"error": "Not Found"}}


@pytest.mark.socket
@SETTINGS
@given(
    method=st.from_regex(r"[A-Z]{1,20}", fullmatch=True),
    target=st.sampled_from(ROUTE_PREFIXES[:5]),
    token=st.booleans(),
)
def test_methods_route_by_spec(service, method, target, token):
    status, headers, body = send(service, (target + "1").encode(), method=method.encode(), token=token)
    check_shape(status, headers, body, {200, 401, 405, 501}, head=method == "HEAD")
    if method in ("GET", "HEAD"):
        assert status == (200 if token else 401)
        assert (body == b"") == (method == "HEAD")
    elif method in routes.KNOWN_METHODS:
        assert status == 405 and headers["allow"] == "GET, HEAD"
    else:  # a method the server does not know at all (RFC 9110 15.6.2)
        assert status == 501 and "allow" not in headers


@pytest.mark.inprocess
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(raw=st.text(max_size=30))
def test_decode_param_returns_text_or_raises_400(raw):
    try:
        value = httpparse.decode_param(raw)
    except answers.HTTPError as err:
        assert err.status == 400
        return
    assert isinstance(value, str)


@pytest.mark.inprocess
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(value=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30))
def test_decode_param_inverts_percent_encoding(value):
    encoded = quote(value, safe="")
    if CONTROL & set(value):
        with pytest.raises(answers.HTTPError):
            httpparse.decode_param(encoded)
    else:
        assert httpparse.decode_param(encoded) == value
