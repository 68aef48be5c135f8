"""httpparse: requests parsed from bytes, no socket. The hostile corpus
(tests/requests/, run by test_hostile.py) holds the many malformed cases;
these check what a parsed request holds and the limits."""

from __future__ import annotations

import io

import pytest

import settings
from answers import HTTPError
from httpparse import Incomplete, read_request

pytestmark = pytest.mark.inprocess

LIMITS = settings.defaults()


def parse(data: bytes, limits=LIMITS):
    return read_request(io.BytesIO(data), limits)


def test_a_request_holds_what_the_routes_use():
    r = parse(b"GET /api/v1/id/7?x=1#f HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer  abc \r\n\r\n")
    assert (r.method, r.path, r.version, r.token, r.keep_alive, r.keep_alive_10, r.head) == (
        "GET",
        "/api/v1/id/7",
        "HTTP/1.1",
        b"abc",
        True,
        False,
        False,
    )


def test_the_token_is_bearer_first_then_x_access_token():
    assert parse(b"GET / HTTP/1.1\r\nHost: h\r\nx-access-token: t2\r\n\r\n").token == b"t2"
    both = b"GET / HTTP/1.1\r\nHost: h\r\nx-access-token: t2\r\nAuthorization: Bearer t1\r\n\r\n"
    assert parse(both).token == b"t1"
    assert parse(b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic dTpw\r\n\r\n").token == b""
    # Authorization wins whatever its scheme: a Basic one is no token, not a fall back to x-access-token.
    basic = b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic dTpw\r\nx-access-token: t2\r\n\r\n"
    assert parse(basic).token == b""
    assert parse(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").token is None


def test_where_the_token_came_from():
    """A JWT is taken from Authorization: Bearer only (auth.py): the request says which it was."""
    bearer = parse(b"GET / HTTP/1.1\r\nHost: h\r\nx-access-token: t2\r\nAuthorization: Bearer t1\r\n\r\n")
    assert (bearer.token, bearer.bearer, getattr(bearer, "caller", "-")) == (b"t1", True, "-")
    header = parse(b"GET / HTTP/1.1\r\nHost: h\r\nx-access-token: t2\r\n\r\n")
    assert (header.token, header.bearer) == (b"t2", False)


@pytest.mark.parametrize("pad", [0, 200], ids=["short", "long"])  # a long line is read in two steps
@pytest.mark.parametrize("byte", range(256))
def test_a_header_value_holds_htab_visible_ascii_and_obs_text_only(byte, pad):
    value = b"a" * pad + bytes([byte]) + b"b"
    data = b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer %s\r\n\r\n" % value
    if byte == 9 or 0x20 <= byte <= 0x7E or byte >= 0x80:
        assert parse(data).token == value.strip(b" \t")
    else:
        with pytest.raises(HTTPError) as refused:
            parse(data)
        assert refused.value.status == 400


@pytest.mark.parametrize(
    "version, connection, keep_alive, says_keep_alive",
    [
        (b"HTTP/1.1", b"", True, False),
        (b"HTTP/1.1", b"Connection: close\r\n", False, False),
        (b"HTTP/1.1", b"Connection: Keep-Alive, CLOSE\r\n", False, False),
        (b"HTTP/1.1", b"Connection: closed\r\n", True, False),
        (b"HTTP/1.0", b"", False, False),
        (b"HTTP/1.0", b"Connection: keep-alive\r\n", True, True),
        (b"HTTP/1.0", b"Connection: upgrade,\tKeep-Alive\r\n", True, True),
    ],
)
def test_connection_is_a_list_of_tokens(version, connection, keep_alive, says_keep_alive):
    r = parse(b"GET / " + version + b"\r\nHost: h\r\n" + connection + b"\r\n")
    assert (r.keep_alive, r.keep_alive_10) == (keep_alive, says_keep_alive)


@pytest.mark.parametrize("headers", [b"", b"Host: a\r\nHost: a\r\n"])
def test_http_1_1_needs_exactly_one_host(headers):
    with pytest.raises(HTTPError) as err:
        parse(b"GET / HTTP/1.1\r\n" + headers + b"\r\n")
    assert err.value.status == 400 and err.value.close


def test_optional_whitespace_is_space_and_tab_only():
    assert parse(b"GET / HTTP/1.1\r\nHost: h\r\nx-access-token:\t t \t\r\n\r\n").token == b"t"
    for ws in (b"\x0b", b"\x0c"):
        with pytest.raises(HTTPError) as err:
            parse(b"GET / HTTP/1.1\r\nHost: h\r\nx-access-token: t" + ws + b"\r\n\r\n")
        assert err.value.status == 400


def test_absolute_form_keeps_the_path():
    assert parse(b"GET http://example.com/healthz HTTP/1.1\r\nHost: h\r\n\r\n").path == "/healthz"


@pytest.mark.parametrize(
    "data, status",
    [
        (b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 200 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: a\r\n" * 11 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: h\r\n" + (b"X: " + b"a" * 90 + b"\r\n") * 5 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n" + b"a" * 101, 413),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
    ],
)
def test_limits_from_the_settings(data, status):
    small = settings.load(
        [
            "--max-request-line",
            "100",
            "--max-header-line",
            "100",
            "--max-headers",
            "10",
            "--max-header-bytes",
            "300",
            "--max-body",
            "100",
        ],
        environ={},
    )
    with pytest.raises(HTTPError) as err:
        parse(data, small)
    assert err.value.status == status and err.value.close


def test_a_body_within_the_limit_is_read_and_dropped():
    rfile = io.BytesIO(b"GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    assert read_request(rfile, LIMITS).path == "/a"
    assert read_request(rfile, LIMITS).path == "/b"  # the next request starts after the body


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GET / HTTP/1.1",
        b"GET / HTTP/1.1\r\nHost: h\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab",
    ],
)
def test_bytes_that_end_before_the_request_does_are_incomplete(data):
    with pytest.raises(Incomplete):
        parse(data)
