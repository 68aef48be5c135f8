"""The request parser held against two others: h11 (Python) and httptools (llhttp, Node's parser).

The corpus (tests/requests/) and generated requests (hypothesis) go to all three, each
request of a connection in turn. Wherever a peer refuses a request as malformed, ours
must refuse it too; wherever all three accept it, they must agree on the method, the
target, the version, where the request ends (Content-Length framing: what a smuggled
request would hide in) and whether the connection stays open. Ours refuses every
Transfer-Encoding, so chunked framing never needs to agree. Every disagreement is
one of those listed below, each with the rule that makes ours right; so are the
requests ours alone refuses (STRICTER). Limits (413, 414, 431) are ours to choose.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import h11
import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import settings as service_settings
from answers import HTTPError
from httpparse import Incomplete, read_request

pytestmark = pytest.mark.inprocess

CORPUS = Path(__file__).resolve().parent / "requests"
OPTIONS = service_settings.defaults()
LIMITS = {413, 414, 431}

# Where a peer refuses and ours accepts, the peer's reason (a part of its message) and ours.
PEER_STRICTER = {
    "Invalid method encountered": "RFC 9110 9.1, 16.1: a method is any token, extensible; one the server "
    "does not know is a 501, not a malformed request (llhttp knows a fixed list)",
    "Expected space after method": "RFC 9110 9.1: the same, for a method llhttp does not know (MKCOL-like)",
    "Expected CRLF after version": "RFC 9112 2.2: a recipient MAY take a bare LF as the end of a line",
    "Missing expected CR after header value": "RFC 9112 2.2: the same, in a header",
    "Missing expected LF after header value": "RFC 9112 2.2: the same, in a header",
    "Expected LF after headers": "RFC 9112 2.2: the same, at the end of the headers",
    "Duplicate Content-Length": "RFC 9110 8.6: a recipient MAY take Content-Length values that are all the "
    "same as one (framing is not in doubt)",
    "no request line received": "RFC 9112 2.2: a server SHOULD ignore at least one empty line before the "
    "request line (h11 ignores none)",
}
# Where all parse a request but disagree on whether the connection stays open.
KEEP_ALIVE = {
    "h11": "RFC 9112 9.3, C.2.2: an HTTP/1.0 client may ask to keep the connection with "
    "Connection: keep-alive; h11 closes every HTTP/1.0 connection",
    "llhttp": "RFC 9112 9.6: close in Connection closes, whatever else the list holds "
    "(llhttp keeps an HTTP/1.0 connection that lists keep-alive and close)",
}
# Ours alone refuses: its message, and the rule.
STRICTER = {
    "Malformed request line": "RFC 9112 3: method SP target SP version, one space each, a method of "
    "capitals (RFC 9110 9.1 names them case-sensitive; ours answers none in "
    "lower case), HTTP/1.0 or 1.1 (a 1.x beyond 1.1 is served as 1.1 "
    "only when a server implements it, 2.6)",
    "Malformed request target": "RFC 9112 3.2: origin-form, or absolute-form of http or https; "
    "authority-form is CONNECT's and asterisk-form OPTIONS *'s, both of a "
    "proxy or the whole server, neither ours",
    "Malformed header": "RFC 9112 5.2, RFC 9110 5.5: obs-fold and control characters are refused",
    "Bad Content-Length": "RFC 9112 6.3: an invalid Content-Length is an unrecoverable error",
    "Transfer-Encoding is not accepted": "RFC 9112 6.1: a server MAY refuse a Transfer-Encoding with a "
    "body it does not need; with Content-Length too it MUST close",
    "More than one Authorization header": "RFC 9110 5.3: a field that is not a list appears once",
    "More than one x-access-token header": "RFC 9110 5.3: the same",
    "More than one Host header": "RFC 9112 3.2: MUST answer 400",
    "An HTTP/1.1 request needs exactly one Host header": "RFC 9112 3.2: MUST answer 400",
    "HTTP Version Not Supported": "RFC 9110 15.6.6: HTTP/2 or 3 is not spoken over an HTTP/1 connection",
}


@dataclass(frozen=True)
class Parsed:
    method: str
    path: str  # the target without query or fragment, and without scheme and authority
    version: str
    length: int  # the bytes the request took, body included: its framing
    keep_alive: bool


@dataclass(frozen=True)
class Refused:
    reason: str


INCOMPLETE = Refused("the bytes ended before the request did")


def path_of(target: bytes) -> str:
    path = target.decode("latin-1").partition("?")[0].partition("#")[0]
    return path if path.startswith("/") else "/" + path.partition("://")[2].partition("/")[2]


def ours(data: bytes) -> list[Parsed | Refused]:
    rfile = io.BufferedReader(io.BytesIO(data))
    out: list[Parsed | Refused] = []
    while rfile.peek(1):
        start = rfile.tell()
        try:
            r = read_request(rfile, OPTIONS)
        except HTTPError as err:
            return [*out, Refused("limit" if err.status in LIMITS else err.message)]
        except Incomplete:
            return [*out, INCOMPLETE]
        out.append(Parsed(r.method, r.path, r.version, rfile.tell() - start, r.keep_alive))
        if not r.keep_alive:
            break
    return out


def with_h11(data: bytes) -> list[Parsed | Refused]:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)  # no limit of its own
    conn.receive_data(data)
    out: list[Parsed | Refused] = []
    done, request = 0, None
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as err:
            return [*out, Refused(str(err))]
        if event is h11.NEED_DATA or event is h11.PAUSED:
            left = conn.trailing_data[0].strip(b"\r\n")
            return [*out, INCOMPLETE] if (left or request) and event is h11.NEED_DATA else out
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            used = len(data) - len(conn.trailing_data[0])
            conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
            switched = conn.our_state is h11.SWITCHED_PROTOCOL  # a CONNECT answered 2xx
            if not switched:
                conn.send(h11.EndOfMessage())
            keep = conn.our_state is h11.DONE
            assert request is not None  # h11 ends only a request it began
            out.append(
                Parsed(
                    request.method.decode(),
                    path_of(request.target),
                    "HTTP/" + request.http_version.decode(),
                    used - done,
                    keep,
                )
            )
            if not keep:
                return out
            done, request = used, None
            conn.start_next_cycle()


class LLHTTPCalls:
    """httptools' callbacks: what one request was, noted as it completes."""

    def __init__(self):
        self.parser: httptools.HttpRequestParser | None = None
        self.url = b""
        self.completed: tuple | None = None

    def on_message_begin(self):
        self.url = b""

    def on_url(self, url: bytes):
        self.url += url

    def on_message_complete(self):
        p = self.parser
        assert p is not None  # with_llhttp sets it before feeding the parser
        self.completed = (
            p.get_method().decode(),
            path_of(self.url),
            "HTTP/" + p.get_http_version(),
            p.should_keep_alive(),
        )


def with_llhttp(data: bytes) -> list[Parsed | Refused]:
    """Fed a byte at a time, so that where each request ends is known."""
    calls = LLHTTPCalls()
    calls.parser = parser = httptools.HttpRequestParser(calls)
    out: list[Parsed | Refused] = []
    start = 0
    for i in range(len(data)):
        try:
            parser.feed_data(data[i : i + 1])
        except httptools.HttpParserUpgrade:
            return out  # CONNECT or Upgrade: llhttp hands the rest over
        except httptools.HttpParserError as err:
            return [*out, Refused(str(err))]
        if calls.completed is not None:
            method, path, version, keep = calls.completed
            calls.completed = None
            out.append(Parsed(method, path, version, i + 1 - start, keep))
            start = i + 1
            if not keep:
                return out
    return [*out, INCOMPLETE] if data[start:].strip(b"\r\n") else out


def disagreements(data: bytes) -> list[str]:
    """Each way the peers and ours differ on these bytes that no rule above explains."""
    mine = ours(data)
    found = []
    for peer, theirs in (("h11", with_h11(data)), ("llhttp", with_llhttp(data))):
        for i, (a, b) in enumerate(zip(mine, theirs, strict=False)):
            if isinstance(a, Refused):
                if a is not INCOMPLETE and not (isinstance(b, Refused) or a.reason == "limit" or a.reason in STRICTER):
                    found.append(f"request {i}: ours alone refuses it ({a.reason}), and no rule says why")
                if a is INCOMPLETE and isinstance(b, Parsed):
                    found.append(f"request {i}: {peer} found its end, ours waits for more: {b}")
                break
            if isinstance(b, Refused):
                if b is INCOMPLETE:
                    found.append(f"request {i}: ours found its end, {peer} waits for more: {a}")
                elif not any(reason in b.reason for reason in PEER_STRICTER):
                    found.append(f"request {i}: {peer} refuses it ({b.reason}), ours accepts: {a}")
                break
            for field in ("method", "path", "version", "length"):
                if getattr(a, field) != getattr(b, field):
                    found.append(f"request {i}: {field} {getattr(a, field)!r}, {peer} {getattr(b, field)!r}")
            if a.keep_alive != b.keep_alive:
                explained = (peer == "h11" and a.version == "HTTP/1.0") or (peer == "llhttp" and not a.keep_alive)
                if not explained:
                    found.append(f"request {i}: keep-alive {a.keep_alive}, {peer} {b.keep_alive}")
                break  # one closes: what follows is no longer the same conversation
            if found:
                break
    return found


CASES = sorted(CORPUS.glob("*/*.http"))


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_the_corpus(path):
    assert disagreements(path.read_bytes()) == []


def test_the_peers_do_refuse_what_ours_refuses_in_the_corpus():
    """The comparison bites: the peers refuse many of the corpus's invalid requests, and parse
    the valid ones as ours does (an import of another parser that accepted anything would pass)."""
    invalid = [p for p in CASES if p.parent.name == "invalid"]
    refused_by_h11 = sum(
        isinstance(with_h11(p.read_bytes())[-1:][0], Refused) for p in invalid if with_h11(p.read_bytes())
    )
    refused_by_llhttp = sum(
        bool(with_llhttp(p.read_bytes())) and isinstance(with_llhttp(p.read_bytes())[-1], Refused) for p in invalid
    )
    assert refused_by_h11 > len(invalid) / 3 and refused_by_llhttp > len(invalid) / 3
    parsed = [ours(p.read_bytes()) for p in CASES if p.parent.name == "valid"]
    assert sum(len(requests) for requests in parsed) > 100


# -- generated requests ----------------------------------------------------------------
EOL = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"])
METHODS = st.sampled_from([b"GET", b"HEAD", b"POST", b"OPTIONS", b"BREW", b"get", b"G-T", b"GET ", b""])
TARGETS = st.one_of(
    st.sampled_from(
        [
            b"/healthz",
            b"/api/v1/id/1",
            b"/api/v1/id/1?x=1#f",
            b"*",
            b"http://a/healthz",
            b"https://a",
            b"ftp://a/b",
            b"a:443",
            b"/a b",
            b"/%41",
            b"//x",
            b"?q",
            b"",
        ]
    ),
    st.binary(min_size=1, max_size=12).map(lambda b: b"/" + b),
)
VERSIONS = st.sampled_from(
    [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"http/1.1", b"HTTP/1", b"HTTP/1.1 ", b""]
)
NAMES = st.sampled_from(
    [
        b"Host",
        b"host",
        b"Content-Length",
        b"Transfer-Encoding",
        b"Connection",
        b"X-A",
        b"Authorization",
        b"Bad Name",
        b"",
        b"X\x00",
        b"\xe9t\xe9",
        b"Host ",
    ]
)
VALUES = st.one_of(
    st.sampled_from(
        [
            b"x",
            b"0",
            b"5",
            b" 5 ",
            b"+5",
            b"05",
            b"1,1",
            b"chunked",
            b"close",
            b"keep-alive",
            b"keep-alive, close",
            b"Close",
            b"",
            b"a\x00b",
            b"a\rb",
            b"\xc3\xa9",
            b"\t v \t",
            b"Bearer t",
            b"99999999999999999999",
        ]
    ),
    st.binary(max_size=8),
)
HEADERS = st.lists(st.tuples(NAMES, st.sampled_from([b":", b": ", b" :", b":\t"]), VALUES), max_size=5)


@st.composite
def requests(draw) -> bytes:
    """One request, a line or a byte wrong here and there, sometimes a body or another request behind it."""
    eol = draw(EOL)
    line = b" ".join([draw(METHODS), draw(TARGETS), draw(VERSIONS)])
    headers = [b"Host: x"] if draw(st.booleans()) else []
    headers += [name + sep + value for name, sep, value in draw(HEADERS)]
    data = eol.join([line, *headers]) + eol + eol + draw(st.sampled_from([b"", b"hello", b"GET / HTTP/1.1\r\n"]))
    if draw(st.booleans()):
        data += b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_generated_requests(data):
    assert disagreements(data) == [], data
