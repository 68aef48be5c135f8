"""HTTP/1.x requests parsed from bytes, with no socket.

``read_request(rfile, limits)`` reads one request from anything with
``readline(n)`` and ``read(n)`` (a socket's buffered reader, or ``io.BytesIO``
in tests) and returns a ``Request`` holding only what the routes use: the
method, the path (its query string apart, unparsed), the token, and whether the
connection stays open. A request that breaks a rule or a limit raises
``HTTPError`` (answers.py) with its status; bytes that end before the request does raise
``Incomplete``.

The standard library's parser builds an ``email.message.Message`` per request,
which costs more than a lookup; this one keeps nothing it will not use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote_to_bytes

from answers import HTTPError

# A whole line checked by one regular expression, in C: faster than splitting and checking
# its parts in Python, and each Python step of a request costs more than its own time in
# a threaded server (measured: bench/README.md).
# request-line = method SP request-target SP HTTP-version, RFC 9112 3; a target is visible ASCII.
REQUEST_LINE = re.compile(rb"([A-Z]{1,20}) ([\x21-\x7e]+) HTTP/1\.([01])\r?\n")
# field-line = field-name ":" OWS field-value OWS, RFC 9112 5; the name is an RFC 9110 token
# (so obs-fold is refused), the value holds no control character but HTAB. The value's bytes are
# named by what they may be, not what they may not: the same set, scanned 2-3x faster on long
# values (a JWT's 700-byte Authorization line: 1.3 us against 3.5; docs/decisions/2026-12-06-jwt-cost.md).
HEADER_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\t\x20-\x7e\x80-\xff]*)\r?\n")
# A long line (a JWT's Authorization: 700 bytes and more) is read as the same rule in two steps:
# the name and OWS by a regular expression, the value's bytes through a table, in C at a few
# instructions a byte where the expression takes 14 (docs/decisions/2026-12-06-jwt-cost.md).
LONG_LINE = 128
HEADER_NAME = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*")
FIELD_BYTES = bytes(1 if b == 9 or 0x20 <= b <= 0x7E or b >= 0x80 else 0 for b in range(256))
NEWER_VERSION = re.compile(rb"[^ ]+ [^ ]+ HTTP/[23][^ ]*\r?\n")  # HTTP/2 or 3 spoken over HTTP/1: 505
BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
CONTROL = re.compile("[\x00-\x1f\x7f]")
OWS = b" \t"  # optional whitespace, RFC 9110 5.6.3: SP and HTAB, nothing else
VERSIONS = {b"0": "HTTP/1.0", b"1": "HTTP/1.1"}
# One set lookup for a header the other branches leave, rather than a comparison per name.
TRACE_HEADERS = frozenset((b"traceparent", b"tracestate", b"x-request-id"))


class Reader(Protocol):
    """What the parser reads from: a socket's buffered reader, or ``io.BytesIO``."""

    def readline(self, size: int = -1, /) -> bytes: ...

    def read(self, size: int = -1, /) -> bytes: ...


class Limits(Protocol):
    """The ``max_*`` settings (``options.Options`` has them)."""

    @property
    def max_request_line(self) -> int: ...
    @property
    def max_header_line(self) -> int: ...
    @property
    def max_headers(self) -> int: ...
    @property
    def max_header_bytes(self) -> int: ...
    @property
    def max_body(self) -> int: ...


class Incomplete(Exception):
    """The bytes ended before the request did: the client left, or was cut off by a deadline."""


@dataclass(slots=True)
class Request:
    method: str
    path: str  # without the query string; percent-encoded as it came
    version: str
    keep_alive: bool  # the connection stays open after the answer
    keep_alive_10: bool  # an HTTP/1.0 client asked to keep it open: the answer says so
    # From Authorization: Bearer, else x-access-token; when both are sent, Authorization wins, whatever its scheme.
    token: bytes | None
    head: bool  # HEAD: the answer without its body
    # Kept as they came (repeated lines joined), read only by the routes that use them.
    if_none_match: bytes | None = None
    accept_encoding: bytes | None = None
    query: str = ""  # the query string, after "?", as it came: read only by the routes that page
    bearer: bool = False  # the token came in Authorization: Bearer (the only place a JWT is taken from)
    # Read only by tracecontext.py, and only when sent: the caller's trace and request id.
    traceparent: bytes | None = None
    tracestate: bytes | None = None
    request_id: bytes | None = None
    # Who called, set by the token check for the access log (as CGI's REMOTE_USER); never the token.
    # Unset until then: a default would cost every request an assignment (bench/instructions.py).
    caller: str = field(init=False)


def read_request(rfile: Reader, limits: Limits) -> Request:
    """One request from ``rfile``; HTTPError for a bad one, Incomplete when the bytes run out.

    ``limits`` has the ``max_*`` settings (settings.py), which say what each bounds.
    """
    readline = rfile.readline
    max_line = limits.max_request_line
    line = readline(max_line + 1)
    if line == b"\r\n" or line == b"\n":  # RFC 9112 2.2: a stray blank line before a request is allowed
        line = readline(max_line + 1)
    if not line.endswith(b"\n"):
        if len(line) > max_line:
            raise HTTPError(414, close=True)
        raise Incomplete()
    request_line = REQUEST_LINE.fullmatch(line)
    if request_line is None:
        if NEWER_VERSION.fullmatch(line):
            raise HTTPError(505, close=True)
        raise HTTPError(400, "Malformed request line", close=True)
    method, target, minor = request_line.groups()
    keep_alive = minor == b"1"  # HTTP/1.0 closes unless it asks for keep-alive
    path, _, query = target.decode().partition("#")[0].partition("?")
    if not path.startswith("/"):
        # absolute-form (RFC 9112 3.2.2): a server must accept it; the authority is ignored
        scheme, sep, rest = path.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            raise HTTPError(400, "Malformed request target", close=True)
        path = "/" + rest.partition("/")[2]

    keep_alive_10 = False
    hosts = 0
    bearer = access_token = content_length = if_none_match = accept_encoding = None
    traceparent = tracestate = request_id = None
    max_line, max_count, max_size = limits.max_header_line, limits.max_headers, limits.max_header_bytes
    count = size = 0
    while True:
        line = readline(max_line + 1)
        if line == b"\r\n" or line == b"\n":
            break
        if not line.endswith(b"\n"):
            if len(line) > max_line:
                raise HTTPError(431, close=True)
            raise Incomplete()
        count += 1
        size += len(line)
        if count > max_count or size > max_size:
            raise HTTPError(431, close=True)
        header = HEADER_LINE.fullmatch(line) if len(line) <= LONG_LINE else long_header_line(line)
        if header is None:
            raise HTTPError(400, "Malformed header", close=True)
        name = header[1].lower()
        value = header[2]  # with its trailing OWS: stripped where it is used
        if name == b"authorization":
            if bearer is not None:
                raise HTTPError(400, "More than one Authorization header", close=True)
            scheme, _, credentials = value.partition(b" ")
            bearer = credentials.strip(OWS) if scheme.lower() == b"bearer" else b""
        elif name == b"x-access-token":
            if access_token is not None:
                raise HTTPError(400, "More than one x-access-token header", close=True)
            access_token = value.rstrip(OWS)
        elif name == b"host":
            hosts += 1
        elif name == b"connection":
            options = {option.strip(OWS) for option in value.lower().split(b",")}
            if b"close" in options:
                keep_alive = keep_alive_10 = False
            elif b"keep-alive" in options and minor == b"0":
                keep_alive = keep_alive_10 = True
        elif name == b"content-length":
            value = value.rstrip(OWS)
            if not value.isdigit() or (content_length is not None and int(value) != content_length):
                raise HTTPError(400, "Bad Content-Length", close=True)
            content_length = int(value)
        elif name == b"transfer-encoding":
            # A GET has no body worth framing; refusing it also closes the door
            # on request smuggling through Content-Length/Transfer-Encoding games.
            raise HTTPError(400, "Transfer-Encoding is not accepted", close=True)
        elif name == b"if-none-match":  # a list: repeated lines are one list (RFC 9110 5.3)
            if_none_match = value if if_none_match is None else if_none_match + b"," + value
        elif name == b"accept-encoding":
            accept_encoding = value if accept_encoding is None else accept_encoding + b"," + value
        elif name in TRACE_HEADERS:
            # Repeated lines joined as a list: right for tracestate; two traceparent or
            # X-Request-Id lines so become one invalid value, ignored (W3C Trace Context 3.2).
            if name == b"traceparent":
                traceparent = value if traceparent is None else traceparent + b"," + value
            elif name == b"tracestate":
                tracestate = value if tracestate is None else tracestate + b"," + value
            else:
                request_id = value if request_id is None else request_id + b"," + value
    if hosts > 1 or (hosts == 0 and minor == b"1"):  # RFC 9112 3.2
        raise HTTPError(
            400,
            "An HTTP/1.1 request needs exactly one Host header" if hosts == 0 else "More than one Host header",
            close=True,
        )
    if content_length:
        if content_length > limits.max_body:
            raise HTTPError(413, close=True)
        if len(rfile.read(content_length)) < content_length:
            raise Incomplete()
    return Request(
        method.decode(),
        path,
        VERSIONS[minor],
        keep_alive,
        keep_alive_10,
        bearer if bearer is not None else access_token,
        method == b"HEAD",
        if_none_match,
        accept_encoding,
        query,
        bearer is not None,
        traceparent,
        tracestate,
        request_id,
    )


def long_header_line(line: bytes) -> tuple[None, bytes, bytes] | None:
    """HEADER_LINE.fullmatch's groups of a line ending in \\n, or None where it finds none."""
    named = HEADER_NAME.match(line)
    if named is None:
        return None
    value = line[named.end() : -2 if line.endswith(b"\r\n") else -1]
    if 0 in value.translate(FIELD_BYTES):
        return None
    return None, named[1], value


def decode_param(raw: str) -> str:
    """A path parameter, percent-decoded as UTF-8; HTTPError 400 when it cannot be."""
    if "%" not in raw:
        return raw  # the target was already checked to be visible ASCII
    if BAD_PERCENT.search(raw):
        raise HTTPError(400, "Bad percent-encoding in path")
    try:
        value = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "Path parameter is not UTF-8") from None
    if CONTROL.search(value):
        raise HTTPError(400, "Control character in path parameter")
    return value
