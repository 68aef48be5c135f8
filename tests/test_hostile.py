"""The hostile-request corpus (tests/requests/, see its README.md), one test per case.

Each case's bytes go in-process through ``connection.Conversation``, the code that
runs every connection of the server, with a reader and a writer over bytes instead
of a socket: requests are read and answered until the bytes run out or an answer
closes the connection, and what it wrote is split into answers. The cases marked
``socket = true`` are also sent over a real socket to the real service, so the
socket's handling is shown to give the same answers. After the corpus
the service still serves, and nothing it logged holds a traceback or the token.
"""

from __future__ import annotations

import io
import itertools
import json
import socket
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TOKEN

import settings
from connection import Conversation, Site
from metrics import Metrics
from service import Service, TokenKeeper
from sqlitestore import SQLiteStore
from store import Layout
from testkit import ROOT, BytesWriter, ServiceProcess
from tracecontext import REQUEST_ID

CORPUS = Path(__file__).resolve().parent / "requests"
FOLDERS = ("valid", "invalid", "either")
KEYS = {"statuses", "records", "socket"}
OPTIONS = settings.defaults()
SERVER_FAULTS = (500, 503, 504)  # a bug, or the store failing: never due to anything a client sends
# What the cases assume of the test store (tests/conftest.py): record 1 is this profile.
RECORD_1 = {"record_id": 1, "nickname": "shadowGecko", "user_id": "jmartinez1"}


@dataclass
class Case:
    name: str
    folder: str
    data: bytes
    statuses: list  # each an int, or a list of the statuses allowed
    records: list[int] | None
    socket: bool


def load_corpus() -> list[Case]:
    cases = []
    for folder in FOLDERS:
        for http in sorted((CORPUS / folder).glob("*.http")):
            expect = tomllib.loads(http.with_suffix(".toml").read_text())
            assert set(expect) <= KEYS, f"{http.stem}: unknown keys {set(expect) - KEYS}"
            cases.append(
                Case(
                    http.stem,
                    folder,
                    http.read_bytes(),
                    expect["statuses"],
                    expect.get("records"),
                    expect.get("socket", False),
                )
            )
    return cases


CASES = load_corpus()


def matches(statuses: list[int], expected: list) -> bool:
    return len(statuses) == len(expected) and all(
        got in want if isinstance(want, list) else got == want for got, want in zip(statuses, expected, strict=True)
    )


# -- the corpus itself -------------------------------------------------------------
@pytest.mark.inprocess
def test_the_corpus_is_whole():
    """Every request file has its expectation and the other way round; names are unique across folders."""
    for folder in FOLDERS:
        requests = {p.stem for p in (CORPUS / folder).glob("*.http")}
        expectations = {p.stem for p in (CORPUS / folder).glob("*.toml")}
        assert requests == expectations, f"{folder}: unpaired {requests ^ expectations}"
    assert {p.name for p in CORPUS.iterdir() if p.is_dir()} == set(FOLDERS)
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), "a name in two folders"
    assert len(CASES) >= 200
    for case in CASES:
        assert case.data, case.name
        assert all(isinstance(s, int) or (isinstance(s, list) and len(s) > 1) for s in case.statuses), case.name
        # either/ holds the cases the RFCs leave open, and only those
        assert (case.folder == "either") == any(isinstance(s, list) for s in case.statuses), case.name


@pytest.mark.inprocess
def test_the_store_is_the_one_the_corpus_was_written_for(store):
    profile = json.loads(store.get_profile("1"))
    assert {k: profile[k] for k in RECORD_1} == RECORD_1, "the cases name record 1's nickname and username"


# -- in-process: the parser and the service, no socket -------------------------------
@pytest.fixture(scope="module")
def store(seeded_db):
    s = SQLiteStore(str(seeded_db), OPTIONS.sqlite_busy_timeout, Layout.of(OPTIONS))
    yield s
    s.close()


@pytest.fixture(scope="module")
def service(store):
    tokens = TokenKeeper(store, refresh=60)
    tokens.read()
    assert tokens.token == TOKEN.encode()
    svc = Service(store, tokens, Metrics(), (ROOT / "openapi.json").read_bytes())
    yield svc
    # After the whole corpus: still serving.
    [answer] = converse(svc, f"GET /api/v1/id/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
    assert answer.status == 200 and json.loads(answer.body)[0]["record_id"] == 1


def converse(service, data: bytes) -> list[Response]:
    """The answers to these bytes on one connection, by the server's own connection code:
    requests are read and answered until the bytes run out (mid-request: no answer) or an
    answer closes the connection."""
    written = conversation_bytes(io.BufferedReader(io.BytesIO(data)), Site(service, OPTIONS))
    return parse_responses(written, head=data.startswith(b"HEAD "))


def conversation_bytes(rfile, site: Site) -> bytes:
    site.traces.count = itertools.count(1)  # the same request ids each run, so two runs' bytes compare
    writer = BytesWriter()
    conversation = Conversation(rfile, writer, site)
    while not conversation.closing:
        conversation.step()
    return bytes(writer.written)


class Pieces(io.RawIOBase):
    """Bytes that arrive in pieces, as a socket's reads return them: a read never crosses into
    the next piece."""

    def __init__(self, pieces: list[bytes]):
        self.pieces = [p for p in pieces if p]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self.pieces:
            return 0
        piece = self.pieces[0]
        n = min(len(buffer), len(piece))
        buffer[:n] = piece[:n]
        if n == len(piece):
            self.pieces.pop(0)
        else:
            self.pieces[0] = piece[n:]
        return n


def boundaries(data: bytes) -> list[int]:
    """Every byte boundary of a case; for the few large ones (limits), those near a line's end,
    near the start and the end, and every 97th, which keeps the run to seconds."""
    if len(data) <= 4096:
        return list(range(1, len(data)))
    near = {i + d for i, byte in enumerate(data) if byte == 0x0A for d in range(-3, 4)}
    near |= set(range(1, 300)) | set(range(len(data) - 300, len(data))) | set(range(1, len(data), 97))
    return sorted(k for k in near if 0 < k < len(data))


@pytest.mark.inprocess
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_request_split_at_every_byte_boundary(case, service, capsys):
    """The answers are the same byte for byte however the request's bytes are split between
    two reads (the parser's reads cross them: a line, a header, a body cut anywhere)."""
    site = Site(service, OPTIONS)  # one Date for all
    whole = conversation_bytes(io.BufferedReader(io.BytesIO(case.data)), site)
    for k in boundaries(case.data):
        split = conversation_bytes(io.BufferedReader(Pieces([case.data[:k], case.data[k:]])), site)
        assert split == whole, f"split after byte {k}: {split[:300]!r}"
    log = capsys.readouterr().err
    assert "Traceback" not in log and " error: " not in log, log


def check_headers(answer: Response) -> None:
    """What every answer says to caches and browsers; a 304 its tag and nothing of a body."""
    assert answer.headers["x-content-type-options"] == "nosniff", answer.head
    assert answer.headers["cache-control"], answer.head
    assert REQUEST_ID.fullmatch(answer.headers["x-request-id"].encode()), answer.head  # never junk echoed
    if answer.status >= 400:
        assert answer.headers["cache-control"] == "no-store", answer.head
    if answer.status == 304:
        assert answer.headers["etag"].startswith('"') and "content-length" not in answer.headers, answer.head


def check_error(status: int, content_type: str, body: bytes, headers: str) -> None:
    """An error in the JSON shape, with the header its status requires."""
    assert content_type == "application/json", content_type
    error = json.loads(body)
    assert set(error) == {"status", "message"} and error["status"] == "failure", error
    assert set(error["message"]) == {"error"} and isinstance(error["message"]["error"], str), error
    if status == 401:
        assert "\r\nWWW-Authenticate: Bearer " in "\r\n" + headers, headers
    if status == 405:
        assert "\r\nAllow: GET, HEAD\r\n" in "\r\n" + headers, headers


@pytest.mark.inprocess
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_request(case, service, store, capsys):
    answers = converse(service, case.data)
    statuses = [a.status for a in answers]
    assert matches(statuses, case.statuses), f"statuses {statuses}, expected {case.statuses}"
    for i, answer in enumerate(answers):
        assert answer.status not in SERVER_FAULTS, answer
        check_headers(answer)
        if answer.status >= 400 and not case.data.startswith(b"HEAD "):
            check_error(answer.status, answer.headers["content-type"], answer.body, answer.head)
        # The last answer closes the connection, or the bytes ran out with it open; none before it closes.
        assert answer.headers.get("connection") != "close" or i == len(answers) - 1, (i, answer.headers)
    if case.records:
        assert json.loads(answers[0].body) == [json.loads(store.get_profile(str(r))) for r in case.records]
    log = capsys.readouterr().err
    assert "Traceback" not in log and " error: " not in log, log
    assert TOKEN not in log and TOKEN[:-1] not in log


# -- over a real socket: the connection handling --------------------------------------
SOCKET_CASES = [c for c in CASES if c.socket]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    head: str
    body: bytes


def parse_responses(raw: bytes, head: bool = False) -> list[Response]:
    """Split what the server sent into answers; a malformed answer fails the case."""
    answers = []
    while raw:
        head_bytes, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, f"an answer without the end of its headers: {raw[:200]!r}"
        status_line, _, header_text = head_bytes.decode("latin-1").partition("\r\n")
        version, status, _ = status_line.split(" ", 2)
        assert version == "HTTP/1.1", status_line
        headers = {}
        for line in header_text.split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head or status == "304" else int(headers["content-length"])
        assert len(rest) >= length, f"a body cut short: {rest[:200]!r}"
        answers.append(Response(int(status), headers, header_text + "\r\n", rest[:length]))
        raw = rest[length:]
    return answers


def exchange(svc: ServiceProcess, data: bytes, timeout: float = 5) -> bytes:
    """Send the bytes on a fresh connection and say so (a half-close); read until the server closes."""
    with socket.create_connection((svc.host, svc.port), timeout=timeout) as s:
        try:
            s.sendall(data)
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


@pytest.fixture(scope="module")
def server(seeded_db, tmp_path_factory):
    log = tmp_path_factory.mktemp("hostile") / "service.log"
    svc = ServiceProcess({"USERPROFILE_DB": str(seeded_db)}, log_path=log).start(wait_for="/readyz")
    yield svc
    # After the socket cases: alive, serving on a fresh connection, nothing leaked or crashed.
    assert svc.proc is not None and svc.proc.poll() is None, "the service process died"
    status, _, body = svc.get("/api/v1/id/1", TOKEN)
    assert status == 200 and json.loads(body)[0]["record_id"] == 1
    metrics = svc.get("/metrics")[2].decode()
    assert not [s for s in SERVER_FAULTS if f'status="{s}"' in metrics], "a server fault was answered"
    svc.stop()
    log = svc.log()
    assert "Traceback" not in log and " error: " not in log, log[-3000:]
    assert TOKEN not in log and TOKEN[:-1] not in log


@pytest.mark.inprocess
def test_socket_cases_cover_what_needs_a_connection():
    """Pipelining, a half-close mid-request and a refusal that ends the connection are among them."""
    assert len(SOCKET_CASES) >= 10
    assert any(len(c.statuses) >= 10 for c in SOCKET_CASES)
    assert any(c.statuses == [] for c in SOCKET_CASES)
    assert any(len(c.statuses) > 1 and c.statuses[-1] == 400 for c in SOCKET_CASES)


@pytest.mark.socket
@pytest.mark.parametrize("case", SOCKET_CASES, ids=[c.name for c in SOCKET_CASES])
def test_over_a_socket(case, server, store):
    raw = exchange(server, case.data)
    head = case.data.startswith(b"HEAD ")  # the HEAD cases are one request each
    answers = parse_responses(raw, head)
    statuses = [a.status for a in answers]
    assert matches(statuses, case.statuses), f"statuses {statuses}, expected {case.statuses}: {raw[:300]!r}"
    for i, answer in enumerate(answers):
        check_headers(answer)
        assert answer.status == 304 or int(answer.headers["content-length"]) >= 0
        if answer.status >= 400 and not head:
            check_error(answer.status, answer.headers["content-type"], answer.body, answer.head)
        # The server closes after the last answer and says so; it says nothing of the kind before.
        last = i == len(answers) - 1
        assert (answer.headers.get("connection") == "close") == last, (i, answer.headers)
    if len(answers) > 1 and case.data.split(b"\r\n", 1)[0].endswith(b" HTTP/1.0"):
        assert answers[0].headers.get("connection") == "keep-alive", "HTTP/1.0 is told the connection stays open"
    if case.records:
        assert json.loads(answers[0].body) == [json.loads(store.get_profile(str(r))) for r in case.records]
