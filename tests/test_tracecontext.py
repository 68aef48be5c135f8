"""tracecontext: the caller's traceparent read by the W3C Trace Context rules, request ids taken
or made, both on the answer and in the access log line, with no OpenTelemetry loaded."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys

import pytest

import settings
from connection import Conversation, Site
from metrics import Metrics
from service import Service, TokenKeeper
from testkit import ROOT, BytesWriter, EmptyStore
from tracecontext import MAX_REQUEST_ID, NO_TRACE, TraceParent, Traces, parse_traceparent, request_id_of

pytestmark = pytest.mark.inprocess

TRACE_ID, PARENT_ID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.mark.parametrize(
    "value, expected",
    [
        (VALID, TraceParent(TRACE_ID, PARENT_ID, 1)),
        (f"00-{TRACE_ID}-{PARENT_ID}-00", TraceParent(TRACE_ID, PARENT_ID, 0)),
        (f"  {VALID}\t", TraceParent(TRACE_ID, PARENT_ID, 1)),  # optional whitespace around a value
        # A later version: the fields version 00 defines are read, what follows a "-" is not.
        (f"cc-{TRACE_ID}-{PARENT_ID}-01", TraceParent(TRACE_ID, PARENT_ID, 1)),
        (f"cc-{TRACE_ID}-{PARENT_ID}-01-what-the-future-adds", TraceParent(TRACE_ID, PARENT_ID, 1)),
        (f"cc-{TRACE_ID}-{PARENT_ID}-01what", None),  # no "-" after the flags
        (f"00-{TRACE_ID}-{PARENT_ID}-01-more", None),  # version 00 is exactly 55 characters
        (f"ff-{TRACE_ID}-{PARENT_ID}-01", None),  # the one invalid version
        (f"00-{'0' * 32}-{PARENT_ID}-01", None),  # an all-zero trace id
        (f"00-{TRACE_ID}-{'0' * 16}-01", None),  # an all-zero parent id
        (f"00-{TRACE_ID.upper()}-{PARENT_ID}-01", None),  # uppercase hex
        (f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01", None),  # a short trace id
        (f"00-{TRACE_ID}-{PARENT_ID}-1", None),
        (f"0-{TRACE_ID}-{PARENT_ID}-01", None),
        (f"00_{TRACE_ID}_{PARENT_ID}_01", None),
        (f"00-{TRACE_ID}-{PARENT_ID}-0g", None),
        (f"{VALID},{VALID}", None),  # two traceparent lines, joined by the parser
        ("", None),
        ("00", None),
    ],
)
def test_traceparent_by_the_w3c_rules(value, expected):
    assert parse_traceparent(value.encode()) == expected


def request_bytes(*headers: str, path: str = "/healthz") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode()


def converse(data: bytes, traces: Traces | None = None) -> tuple[list[str], list[str]]:
    """The answers' heads and the access log's lines for these bytes on one connection."""
    options = dataclasses.replace(settings.defaults(), access_log=True)
    service = Service(EmptyStore(), TokenKeeper(EmptyStore(), refresh=60), Metrics(), b"{}")
    writer, access_log = BytesWriter(), io.StringIO()
    conversation = Conversation(
        io.BufferedReader(io.BytesIO(data)), writer, Site(service, options, None, access_log, traces)
    )
    while not conversation.closing:
        conversation.step()
    heads = [part.split("\r\n\r\n")[0] for part in writer.written.decode().split("HTTP/1.1 ")[1:]]
    return heads, access_log.getvalue().splitlines()


def header(head: str, name: str) -> str:
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.lower() == name.lower():
            return value.strip()
    return ""


def test_the_callers_trace_id_is_logged_and_a_bad_traceparent_is_ignored_not_refused():
    heads, lines = converse(
        request_bytes(f"traceparent: {VALID}")
        + request_bytes("traceparent: 00-not-a-trace")
        + request_bytes(f"traceparent: {VALID}", f"traceparent: {VALID}")  # two: invalid
        + request_bytes()
    )
    assert [head.split(" ")[0] for head in heads] == ["200"] * 4
    assert [line.rsplit(" trace_id=", 1)[1] for line in lines] == [TRACE_ID, NO_TRACE, NO_TRACE, NO_TRACE]


def test_a_valid_request_id_is_returned_and_logged_else_one_is_made():
    given = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
    long_one = "a" * (MAX_REQUEST_ID + 1)
    heads, lines = converse(
        request_bytes(f"X-Request-Id: {given}")
        + request_bytes("X-Request-Id: has space")
        + request_bytes(f"X-Request-Id: {long_one}")
        + request_bytes("X-Request-Id: a", "X-Request-Id: b")  # two: not one id
        + request_bytes("X-Request-Id: caf\xe9")
        + request_bytes()
    )
    ids = [header(head, "X-Request-Id") for head in heads]
    assert ids[0] == given
    made = ids[1:]
    assert len(set(made)) == len(made) and all(i and i != given and len(i) <= MAX_REQUEST_ID for i in made)
    prefix = made[0].rsplit("-", 1)[0]
    assert [i.rsplit("-", 1) for i in made] == [[prefix, f"{n:x}"] for n in range(1, len(made) + 1)]
    assert [line.split(" request_id=", 1)[1].split(" ")[0] for line in lines] == ids


def test_the_access_log_line_ends_with_the_request_and_trace_ids():
    _, [line] = converse(request_bytes(f"traceparent: {VALID}", "X-Request-Id: abc-1", "Connection: close"))
    assert line.split(" ", 1)[1].startswith("method=GET route=/healthz status=200 ms=")
    assert line.endswith(f" bytes=15 caller=- request_id=abc-1 trace_id={TRACE_ID}")


def test_a_request_the_parser_refuses_gets_a_request_id_too():
    heads, lines = converse(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
    assert heads[0].startswith("400") and header(heads[0], "X-Request-Id")
    assert lines[0].endswith(f"request_id={header(heads[0], 'X-Request-Id')} trace_id={NO_TRACE}")


def test_processes_make_different_request_ids():
    assert Traces().request_id(None) != Traces().request_id(None)
    assert Traces().request_id(None).startswith(b"X-Request-Id: ") and request_id_of(Traces().request_id(None))


# Run in a fresh interpreter: this one may have loaded OpenTelemetry for another test.
NOTHING_LOADED = """
import io, sys
import settings, userprofile_service
from test_tracecontext import converse, request_bytes, VALID
traces = userprofile_service.traces_for(settings.defaults({"OTEL_TRACES_SAMPLER": "always_on"}))
heads, _ = converse(request_bytes(f"traceparent: {VALID}", "tracestate: a=b"), traces)
assert heads[0].startswith("200"), heads
print(sorted(m for m in sys.modules if m.startswith(("opentelemetry", "otelexport"))))
"""


def test_without_an_endpoint_no_opentelemetry_module_is_loaded():
    found = subprocess.run(
        [sys.executable, "-c", NOTHING_LOADED],
        cwd=ROOT / "tests",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert found.stdout.strip() == "[]", found.stdout + found.stderr


NOT_INSTALLED = """
import sys
class NoOpenTelemetry:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ImportError(f"No module named {name!r}")
sys.meta_path.insert(0, NoOpenTelemetry())
import settings, userprofile_service
userprofile_service.traces_for(settings.defaults({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}))
"""


def test_an_endpoint_without_opentelemetry_installed_stops_the_start_saying_how_to_install_it():
    found = subprocess.run([sys.executable, "-c", NOT_INSTALLED], capture_output=True, text=True, timeout=60)
    assert found.returncode == 2, found.stderr
    assert "OpenTelemetry is not installed" in found.stderr and "requirements-tracing.txt" in found.stderr
    assert "Traceback" not in found.stderr
