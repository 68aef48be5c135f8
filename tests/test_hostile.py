"""A corpus of hostile requests, sent over raw sockets to the real service.

Scanners, broken clients and attackers on a public load balancer send request
lines, targets and headers that no browser would. Each case below is the exact
bytes sent on a fresh connection and the answer SPEC requires: a 4xx (or the
right 200/404) in the JSON error shape, never a 5xx, a hang or a traceback.
After the whole corpus the service still answers a normal request on a fresh
connection, its process is alive, and its log holds no traceback and no token.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
from conftest import TOKEN, ServiceProcess

AUTH = f"Authorization: Bearer {TOKEN}\r\n"
ERROR_KEYS = {"status", "message"}


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Case:
    name: str
    data: bytes
    expect: tuple[int | frozenset, ...]  # the status of each answer, in order (or the set RFC 9112 allows)
    head: bool = False  # the answers carry no body
    body: object = None  # when set: the JSON the first answer must hold
    half_close: bool = False  # shut the write side after sending: the client says it is done
    notes: list = field(default_factory=list)


def request(target: str | bytes, *headers: str | bytes, method: bytes = b"GET", version: bytes = b"HTTP/1.1",
            close: bool = True, auth: bool = True, body: bytes = b"") -> bytes:
    """A request's bytes; ``Connection: close`` so the server ends the exchange."""
    target = target.encode() if isinstance(target, str) else target
    lines = [method + b" " + target + b" " + version, b"Host: userprofile.test"]
    if auth:
        lines.append(AUTH.strip().encode())
    lines += [h.encode() if isinstance(h, str) else h for h in headers]
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def parse_responses(raw: bytes, head: bool = False) -> list[Response]:
    """Split what the server sent into answers; a malformed answer fails the case."""
    answers = []
    while raw:
        head_bytes, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, f"an answer without the end of its headers: {raw[:200]!r}"
        status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
        version, status, _ = status_line.split(" ", 2)
        assert version == "HTTP/1.1", status_line
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head else int(headers["content-length"])
        assert len(rest) >= length, f"a body cut short: {rest[:200]!r}"
        answers.append(Response(int(status), headers, rest[:length]))
        raw = rest[length:]
    return answers


def exchange(svc: ServiceProcess, data: bytes, half_close: bool = False, timeout: float = 5) -> bytes:
    """Send the bytes on a fresh connection; read until the server closes it."""
    with socket.create_connection((svc.host, svc.port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may refuse and close before it has read everything
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break  # refused and closed with unread bytes left: what was sent before still counts
            except TimeoutError:
                raise AssertionError("the server neither answered nor closed the connection") from None
            if not chunk:
                break
            chunks.append(chunk)
        else:
            raise AssertionError("the server kept the connection open")
        return b"".join(chunks)


def check_answer(case: Case, answer: Response) -> None:
    assert int(answer.headers.get("content-length", -1)) >= 0, "no Content-Length"
    if answer.status >= 400:
        assert answer.headers.get("content-type") == "application/json", answer.headers
        if not case.head:
            error = json.loads(answer.body)
            assert set(error) == ERROR_KEYS and error["status"] == "failure", error
            assert set(error["message"]) == {"error"} and isinstance(error["message"]["error"], str), error
    if answer.status == 401:
        assert answer.headers.get("www-authenticate", "").startswith("Bearer"), answer.headers
    if answer.status == 405:
        assert answer.headers.get("allow") == "GET, HEAD", answer.headers


def corpus(profile: dict) -> list[Case]:
    """Every case: (name, bytes, expected statuses). ``profile`` is record 1 of the seeded store."""
    nickname, username = profile["nickname"], profile["user_id"]
    cases: list[Case] = []
    either = frozenset({200, 400})  # where RFC 9112 lets a server accept or refuse

    def add(name, data, *expect, **kw):
        cases.append(Case(name, data, tuple(expect), **kw))

    # -- request line -------------------------------------------------------------------------
    add("target over 8 KiB", request("/api/v1/id/" + "1" * 8200), 414)
    add("request line over 8 KiB in the version", b"GET /healthz HTTP/1.1" + b"1" * 8200 + b"\r\n\r\n", 414)
    add("request line over 8 KiB and no end", b"GET /" + b"a" * 20000, 414)
    add("method over 8 KiB", b"G" * 9000 + b" / HTTP/1.1\r\n\r\n", 414)
    add("percent-encoding over 8 KiB", request("/api/v1/nickname/" + "%41" * 3000), 414)
    add("request line of spaces", b"   \r\n\r\n", 400)
    add("method alone", b"GET\r\n\r\n", 400)
    add("four words", b"GET /healthz HTTP/1.1 extra\r\nConnection: close\r\n\r\n", 400)
    add("two spaces", b"GET  /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", 400)
    add("tabs for spaces", b"GET\t/healthz\tHTTP/1.1\r\n\r\n", 400)
    add("bare CR in the request line", b"GET /healthz\rHTTP/1.1\r\n\r\n", 400)
    add("NUL in the request line", b"GET /healthz\x00 HTTP/1.1\r\n\r\n", 400)
    add("lower-case method", request("/healthz", method=b"get"), 400)
    add("method of 21 letters", request("/healthz", method=b"A" * 21), 400)
    add("method with a digit", request("/healthz", method=b"GET1"), 400)
    add("unknown method on a route", request("/api/v1/id/1", method=b"BREW"), 405)
    add("TRACE on a route", request("/healthz", method=b"TRACE"), 405)
    add("CONNECT in authority-form", request("userprofile.test:443", method=b"CONNECT"), 400)
    add("OPTIONS in asterisk-form", request("*", method=b"OPTIONS"), 400)
    add("HTTP/1.2", request("/healthz", version=b"HTTP/1.2"), either)  # SHOULD be taken as 1.1
    add("HTTP/9.9", request("/healthz", version=b"HTTP/9.9"), 400)
    add("lower-case version", request("/healthz", version=b"http/1.1"), 400)
    add("not HTTP", request("/healthz", version=b"FOO/1.1"), 400)
    add("HTTP/0.9 simple request", b"GET /api/v1/id/1\n", 400)
    add("HTTP/0.9 with CRLF", b"GET /\r\n", 400)
    add("HTTP/2 prior-knowledge preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00", 505)
    add("HTTP/2 in an HTTP/1 request line", request("/healthz", version=b"HTTP/2"), 505)
    add("HTTP/3.0", request("/healthz", version=b"HTTP/3.0"), 505)
    client_hello = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32))
    add("TLS ClientHello on the plain port", client_hello + b"\r\n", 400)
    add("target without a leading slash", request("healthz"), 400)
    add("target of a query only", request("?a=1"), 400)
    add("target of a fragment only", request("#top"), 400)
    add("absolute-form", request("http://userprofile.test/healthz"), 200)
    add("absolute-form to the API", request("http://userprofile.test:8080/api/v1/id/1?x=1"), 200, body=[profile])
    add("absolute-form https with no path", request("https://userprofile.test"), 404)
    add("absolute-form of another scheme", request("ftp://userprofile.test/healthz"), 400)
    add("absolute-form with no authority", request("http:///healthz"), either)
    add("fragment after the path", request("/healthz#frag"), 200)
    add("empty query", request("/api/v1/id/1?"), 200, body=[profile])
    add("a blank line before the request", b"\r\n" + request("/healthz"), 200)
    add("two blank lines before the request", b"\r\n\r\n" + request("/healthz"), either)

    # -- percent-encoding and bytes in the path ---------------------------------------------------
    add("percent at the end", request("/api/v1/id/1%"), 400)
    add("percent and one digit", request("/api/v1/id/%4"), 400)
    add("percent and non-hex", request("/api/v1/id/%G1"), 400)
    add("percent-encoded percent then junk", request("/api/v1/nickname/%%41"), 400)
    add("overlong UTF-8 slash", request("/api/v1/nickname/%C0%AF"), 400)
    add("overlong UTF-8 three bytes", request("/api/v1/nickname/%E0%80%AF"), 400)
    add("UTF-16 surrogate in UTF-8", request("/api/v1/nickname/%ED%A0%80"), 400)
    add("beyond U+10FFFF", request("/api/v1/nickname/%F4%90%80%80"), 400)
    add("lone continuation byte", request("/api/v1/username/%80"), 400)
    add("byte 0xFF", request("/api/v1/username/%FF"), 400)
    add("encoded NUL", request("/api/v1/id/1%00"), 400)
    add("encoded CRLF: header injection", request("/api/v1/username/x%0D%0ASet-Cookie:%20a=b"), 400)
    add("encoded DEL", request("/api/v1/nickname/a%7Fb"), 400)
    add("encoded ESC", request("/api/v1/picture/raw/%1B[2J"), 400)
    add("raw UTF-8 bytes in the path", request("/api/v1/nickname/Zo\u00eb".encode()), 400)
    add("raw Latin-1 byte in the path", request(b"/api/v1/nickname/Zo\xeb"), 400)
    add("raw 0xFF in the path", request(b"/api/v1/id/\xff"), 400)
    add("raw space in the path", b"GET /api/v1/id/1 2 HTTP/1.1\r\n" + AUTH.encode() + b"\r\n", 400)
    add("raw DEL in the path", request(b"/api/v1/id/\x7f"), 400)
    add("double-encoded dots", request("/api/v1/id/%252e%252e"), 404)
    add("encoded slashes in an id", request("/api/v1/id/1%2F..%2F2"), 404)
    add("encoded dot-dot id", request("/api/v1/id/%2e%2e"), 404)
    add("encoded slash after a route", request("/healthz%2F"), 404)
    add("lower-case hex for a real nickname", request("/api/v1/nickname/" + "".join(
        f"%{b:02x}" for b in nickname.encode())), 200)
    add("upper-case hex for a real username", request("/api/v1/username/" + "".join(
        f"%{b:02X}" for b in username.encode())), 200, body=[profile])

    # -- dot segments and near-miss paths -------------------------------------------------------
    add("dot-dot segment inside the API path", request("/api/v1/../v1/id/1"), 404)
    add("dot-dot to /etc/passwd", request("/../../../../etc/passwd"), 404)
    add("dot-dot after a route", request("/api/v1/id/../../../etc/passwd"), 404)
    add("id of two dots", request("/api/v1/id/.."), 404)
    add("dot segment id", request("/api/v1/id/./1"), 404)
    add("double slash before the API", request("//api/v1/id/1"), 404)
    add("double slash inside the API", request("/api//v1/id/1"), 404)
    add("trailing slash after an id", request("/api/v1/id/1/"), 404)
    add("upper-case path", request("/API/V1/ID/1"), 404)
    add("backslash for slash", request("/api\\v1\\id\\1"), 404)
    add("path after the OpenAPI document", request("/api/v1/openapi.json/.."), 404)
    add("a scanner's favourite", request("/.git/config"), 404)
    add("a scanner's PHP probe", request("/index.php?s=/Index/\\think\\app/invokefunction"), 404)

    # -- empty and odd parameters ------------------------------------------------------------------
    for route in ("nickname", "username", "picture/raw", "picture/record"):
        add(f"empty {route}", request(f"/api/v1/{route}/"), 404)
    add("id of 8,000 digits", request("/api/v1/id/" + "9" * 8000), 404)
    add("id of 300 digits", request("/api/v1/picture/raw/" + "1" * 300), 404)
    add("id with a leading zero", request("/api/v1/id/01"), 404)
    add("negative id", request("/api/v1/id/-1"), 404)
    add("id as a float", request("/api/v1/id/1.0"), 404)
    add("id padded with an encoded space", request("/api/v1/id/%201"), 404)
    add("id past 64 bits", request("/api/v1/id/99999999999999999999999"), 404)
    add("id in exponent form", request("/api/v1/id/1e3"), 404)

    # -- Unicode ----------------------------------------------------------------------------------
    add("nickname with a precomposed letter", request("/api/v1/nickname/Zo%C3%ABy"), 404)
    add("nickname with a combining letter", request("/api/v1/nickname/Zoe%CC%88"), 404)
    add("nickname of an emoji", request("/api/v1/nickname/%F0%9F%98%80"), 404)
    add("nickname with a right-to-left override", request("/api/v1/nickname/%E2%80%AE" + quote(nickname)), 404)
    add("nickname of U+10FFFF", request("/api/v1/nickname/%F4%8F%BF%BF"), 404)
    add("nickname with a zero-width space", request("/api/v1/nickname/" + quote(nickname[:2] + "\u200b"
                                                                               + nickname[2:])), 404)
    add("username in full-width letters", request("/api/v1/username/" + quote(
        "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in username))), 404)

    # -- SQL++ injection: parameters, never statement text ----------------------------------------
    for label, value in [
        ("quote OR true", "' OR '1'='1"),
        ("double quote OR true", '" OR 1=1 --'),
        ("comment out the rest", f"{nickname}' --"),
        ("UNION SELECT", "x' UNION SELECT * FROM service_auth --"),
        ("stacked DROP", "x'; DROP INDEX user_data_nickname; --"),
        ("backtick identifier", "` OR true OR `"),
        ("named parameter name", "$nickname"),
        ("positional parameter", "$1"),
        ("LIKE wildcard", "%"),
        ("N1QL function", "x' OR META().id LIKE 'service_auth%"),
    ]:
        add(f"SQL++ in nickname: {label}", request("/api/v1/nickname/" + quote(value, safe="")), 404)
    for label, value in [
        ("quote OR true", f"{username}' OR 'a'='a"),
        ("ANY SATISFIES", "x\" OR ANY v IN [1] SATISFIES v = 1 END OR \""),
        ("subquery for the token", "x' OR user_id IN (SELECT RAW token FROM service_auth) --"),
        ("wildcard", "*"),
    ]:
        add(f"SQL++ in username: {label}", request("/api/v1/username/" + quote(value, safe="")), 404)
    add("SQL++ in id", request("/api/v1/id/" + quote("1 OR 1=1", safe="")), 404)
    add("SQL++ in id: key of the token", request("/api/v1/id/" + quote("1' UNION SELECT token --", safe="")), 404)
    add("key of another collection in an id", request("/api/v1/id/" + quote("../service_auth:1", safe="")), 404)
    add("the right username after the injections", request("/api/v1/username/" + quote(username)), 200,
        body=[profile])

    # -- headers ------------------------------------------------------------------------------------
    add("Authorization over 8 KiB", request("/healthz", "Authorization: Bearer " + "t" * 9000, auth=False), 431)
    add("headers over 64 KiB in all", request("/healthz", *[f"X-Pad-{i}: " + "p" * 1200 for i in range(60)]), 431)
    add("header without a colon", request("/healthz", "NoColonHere"), 400)
    add("space in a header name", request("/healthz", "X Bad: 1"), 400)
    add("space before the colon", request("/healthz", "Host : x"), 400)
    add("empty header name", request("/healthz", ": x"), 400)
    add("obs-fold continuation line", request("/healthz", "X-Folded: a", "  b"), 400)
    add("obs-fold with a tab", request("/healthz", "X-Folded: a", "\tb"), 400)
    add("NUL in a header value", request("/healthz", b"X-Nul: a\x00b"), 400)
    add("bare CR in a header value", request("/healthz", b"X-Cr: a\rb"), 400)
    add("ESC in a header value", request("/healthz", b"X-Esc: \x1b[31m"), 400)
    add("non-ASCII header name", request("/healthz", b"X-\xc3\xa9: 1"), 400)
    add("obs-text in a header value", request("/healthz", b"X-Latin: caf\xe9"), 200)
    add("bare LF line ends", b"GET /healthz HTTP/1.1\nHost: x\nConnection: close\n\n", either)
    add("headers never ended", b"GET /healthz HTTP/1.1\r\nHost: x\r\n", half_close=True)

    # -- bodies and framing on a GET -----------------------------------------------------------------
    add("Content-Length and Transfer-Encoding", request("/healthz", "Content-Length: 5",
                                                         "Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400)
    add("Transfer-Encoding: chunked", request("/healthz", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400)
    add("Transfer-Encoding: identity", request("/healthz", "Transfer-Encoding: identity"), 400)
    add("two different Content-Lengths", request("/healthz", "Content-Length: 3", "Content-Length: 4",
                                                  body=b"abcd"), 400)
    add("two equal Content-Lengths", request("/healthz", "Content-Length: 4", "Content-Length: 4",
                                              body=b"abcd"), either)
    add("Content-Length list", request("/healthz", "Content-Length: 4, 4", body=b"abcd"), 400)
    add("negative Content-Length", request("/healthz", "Content-Length: -1"), 400)
    add("signed Content-Length", request("/healthz", "Content-Length: +4", body=b"abcd"), 400)
    add("hex Content-Length", request("/healthz", "Content-Length: 0x4", body=b"abcd"), 400)
    add("empty Content-Length", request("/healthz", "Content-Length: "), 400)
    add("Content-Length over the body limit", request("/healthz", "Content-Length: 70000"), 413)
    add("Content-Length past 64 bits", request("/healthz", "Content-Length: 99999999999999999999999"), 413)
    add("a body on a GET", request("/api/v1/id/2", "Content-Length: 11", body=b"hello world"), 200)
    add("a body on a GET, then the next request", request("/api/v1/id/1", "Content-Length: 5", close=False,
                                                           body=b"hello") + request("/healthz"), 200, 200)
    smuggled = b"GET /api/v1/id/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    add("a smuggled request in a GET body", request("/healthz", "Content-Length: 0", close=False, body=smuggled),
        200, 401)
    add("a body shorter than its Content-Length", request("/healthz", "Content-Length: 100", body=b"short"),
        half_close=True)
    add("a POST with a body on a route", request("/api/v1/id/1", "Content-Type: application/json",
                                                  "Content-Length: 2", method=b"POST", close=False, body=b"{}")
        + request("/api/v1/id/1"), 405, 200)

    # -- authentication ------------------------------------------------------------------------------
    add("two Authorization headers", request("/api/v1/id/1", AUTH.strip()), 400)
    add("two Authorization headers, the second wrong", request("/api/v1/id/1", "Authorization: Bearer x"), 400)
    add("two x-access-token headers", request("/api/v1/id/1", f"x-access-token: {TOKEN}",
                                              f"X-Access-Token: {TOKEN}", auth=False), 400)
    add("Bearer and a space", request("/api/v1/id/1", "Authorization: Bearer ", auth=False), 401)
    add("Bearer and spaces", request("/api/v1/id/1", "Authorization: Bearer      ", auth=False), 401)
    add("the scheme alone, no Bearer", request("/api/v1/id/1", f"Authorization: {TOKEN}", auth=False), 401)
    add("an empty Authorization", request("/api/v1/id/1", "Authorization:", auth=False), 401)
    add("Bearer with a tab", request("/api/v1/id/1", f"Authorization: Bearer\t{TOKEN}", auth=False), 401)
    add("token differing in its last byte", request("/api/v1/id/1", f"Authorization: Bearer {TOKEN[:-1]}"
                                                    + chr(ord(TOKEN[-1]) ^ 1), auth=False), 401)
    add("token differing in its first byte", request("/api/v1/id/1", "Authorization: Bearer X" + TOKEN[1:],
                                                     auth=False), 401)
    add("token missing its last byte", request("/api/v1/id/1", f"Authorization: Bearer {TOKEN[:-1]}",
                                               auth=False), 401)
    add("token with a byte more", request("/api/v1/id/1", f"Authorization: Bearer {TOKEN}0", auth=False), 401)
    add("token with a non-ASCII byte more", request("/api/v1/id/1", f"Authorization: Bearer {TOKEN}".encode()
                                                    + b"\xff", auth=False), 401)
    add("token in upper case", request("/api/v1/id/1", f"Authorization: Bearer {TOKEN.upper()}", auth=False), 401)
    add("x-access-token differing in its last byte", request("/api/v1/id/1", f"x-access-token: {TOKEN[:-1]}_",
                                                             auth=False), 401)
    add("empty x-access-token", request("/api/v1/id/1", "x-access-token:", auth=False), 401)
    add("token in the query string", request(f"/api/v1/id/1?token={TOKEN}&access_token={TOKEN}", auth=False), 401)
    add("token in a cookie", request("/api/v1/id/1", f"Cookie: token={TOKEN}", auth=False), 401)
    add("wrong Bearer, right x-access-token", request("/api/v1/id/1", "Authorization: Bearer nope",
                                                      f"x-access-token: {TOKEN}", auth=False), 401)
    add("right Bearer, wrong x-access-token", request("/api/v1/id/1", "x-access-token: nope"), 200)
    add("Bearer in capitals, two spaces", request("/api/v1/id/1", f"Authorization: BEARER  {TOKEN}", auth=False),
        200, body=[profile])

    # -- pipelining ------------------------------------------------------------------------------------
    add("twenty pipelined requests", request("/healthz", close=False) * 19 + request("/healthz"), *[200] * 20)
    add("pipelined: a 404 then a 200", request("/api/v1/id/0", close=False) + request("/api/v1/id/1"), 404, 200)
    add("pipelined: a malformed one ends the connection", request("/healthz", close=False)
        + b"GET /a\x01 HTTP/1.1\r\n\r\n" + request("/healthz"), 200, 400)
    add("pipelined: a 401 keeps the connection", request("/api/v1/id/1", close=False, auth=False)
        + request("/api/v1/id/1"), 401, 200)
    add("HEAD on a missing record", request("/api/v1/id/999999", method=b"HEAD"), 404, head=True)
    add("HEAD with a wrong token", request("/api/v1/picture/raw/1", method=b"HEAD", auth=False), 401, head=True)
    return cases


@pytest.fixture(scope="module")
def service(seeded_db, tmp_path_factory):
    log = tmp_path_factory.mktemp("hostile") / "service.log"
    svc = ServiceProcess({"USERPROFILE_DB": str(seeded_db)}, log_path=log).start(wait_for="/readyz")
    yield svc
    svc.stop()


def test_hostile_corpus(service, capsys):
    status, _, body = service.get("/api/v1/id/1", TOKEN)
    assert status == 200
    [profile] = json.loads(body)
    cases = corpus(profile)
    assert len(cases) >= 60
    failures = []
    for case in cases:
        started = time.monotonic()
        try:
            raw = exchange(service, case.data, half_close=case.half_close)
            answers = parse_responses(raw, head=case.head)
            statuses = tuple(a.status for a in answers)
            assert len(statuses) == len(case.expect) and all(
                got in want if isinstance(want, frozenset) else got == want
                for got, want in zip(statuses, case.expect, strict=True)
            ), f"statuses {statuses}, expected {case.expect}: {raw[:300]!r}"
            for answer in answers:
                check_answer(case, answer)
            if case.body is not None:
                assert json.loads(answers[0].body) == case.body, answers[0].body[:300]
            assert time.monotonic() - started < 3, "answered too slowly"
        except AssertionError as exc:
            failures.append(f"{case.name}: {exc}")
    with capsys.disabled():
        print(f"\nhostile corpus: {len(cases)} cases tried, {len(cases) - len(failures)} passed")
    assert not failures, "\n".join(failures)

    # After the whole corpus: alive, serving on a fresh connection, nothing leaked or crashed.
    assert service.proc.poll() is None, "the service process died"
    status, headers, body = service.get("/api/v1/id/1", TOKEN)
    assert status == 200 and json.loads(body) == [profile]
    assert service.get(f"/api/v1/username/{profile['user_id']}", TOKEN)[0] == 200  # the indexes are still there
    metrics = service.get("/metrics")[2].decode()
    assert 'status="500"' not in metrics, "a request ended in a 500"
    log = service.log()
    assert "Traceback" not in log
    assert TOKEN not in log and TOKEN[:-1] not in log
    assert " error: " not in log, [line for line in log.splitlines() if " error: " in line]
