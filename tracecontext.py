"""A request's ids: its request id, and the trace it belongs to (W3C Trace Context).

Every answer carries an ``X-Request-Id``: the client's own when it sent a valid one (at most
``MAX_REQUEST_ID`` characters of ``REQUEST_ID``'s), else one made here from a per-process
random prefix and a counter (unique without a random draw per request). A ``traceparent``
header that is valid by the W3C Trace Context rules names the caller's trace, whose id goes
into the access log line; an invalid one is ignored, as the rules say, never refused. Its
``tracestate`` is read only where a span continues it (``otelexport.py``).

``Traces`` is all of this without export: standard library only, a header looked at only when
it was sent. ``otelexport.Exporting``, a ``Traces`` that also makes a span per request and sends
it to an OpenTelemetry collector, is imported only when export is configured
(``userprofile_service.traces_for``), so a service without it loads no OpenTelemetry module.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any, NamedTuple

from httpparse import Request

MAX_REQUEST_ID = 200
# What a request id taken from a client may hold: what request ids are made of (UUIDs, hex,
# base64, ingress-nginx's and Envoy's), and nothing that could break a log line or a header.
REQUEST_ID = re.compile(rb"[A-Za-z0-9._~:/+=@-]{1,%d}" % MAX_REQUEST_ID)
# Traces.begin gives the answer's whole header line, made in one step: ``request_id_of`` reads
# the id back for the log, where it is needed only when the access log is on.
REQUEST_ID_LINE = b"X-Request-Id: %s\r\n"
COUNT_HEX = b"%x\r\n"  # a new id's line: the process's ``line_head``, then the count in hex
# traceparent = version "-" trace-id "-" parent-id "-" trace-flags, lowercase hex (W3C Trace
# Context 3.2); a later version may append "-" and more fields.
TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
TRACEPARENT_LENGTH = 55
INVALID_VERSION = b"ff"
ZERO_TRACE_ID, ZERO_PARENT_ID = b"0" * 32, b"0" * 16
SAMPLED = 0x01  # trace-flags: the caller records this trace
OWS = b" \t"
NO_TRACE = "-"  # the access log's trace id when there is none


class TraceParent(NamedTuple):
    trace_id: str  # 32 lowercase hex digits
    parent_id: str  # 16: the caller's span
    flags: int


def parse_traceparent(value: bytes) -> TraceParent | None:
    """The caller's trace from a ``traceparent`` value, or None when it is not valid (W3C Trace
    Context 3.2.2-3.2.4, 4.3: unknown versions are read for the fields version 00 defines)."""
    value = value.strip(OWS)
    found = TRACEPARENT.match(value)
    if found is None:
        return None
    version, trace_id, parent_id, flags = found.groups()
    if version == INVALID_VERSION or trace_id == ZERO_TRACE_ID or parent_id == ZERO_PARENT_ID:
        return None
    if len(value) != TRACEPARENT_LENGTH and (version == b"00" or value[TRACEPARENT_LENGTH] != 0x2D):  # "-"
        return None
    return TraceParent(trace_id.decode(), parent_id.decode(), int(flags, 16))


# What ``Traces.begin`` gives: the request id's header line, the trace id (NO_TRACE when there
# is none), and with export a recorded span's handle for ``end`` (None when not recorded). A
# plain tuple: made on every request, where a class costs ten times more.
Ids = tuple[bytes, str, Any]


def request_id_of(line: bytes) -> str:
    """The request id of an ``X-Request-Id`` header line (Traces.begin's)."""
    return line[14:-2].decode()


class Traces:
    """The request id and the caller's trace of each request, nothing exported."""

    exporting = False

    def __init__(self) -> None:
        # Unique across processes and pods without a random draw per request: 48 random bits
        # per process, then a count.
        self.line_head = b"X-Request-Id: " + os.urandom(6).hex().encode() + b"-"  # 12 hex digits and a dash
        self.count = itertools.count(1)

    def request_id(self, request: Request | None) -> bytes:
        """The answer's ``X-Request-Id`` line: the client's id when it sent a valid one, else a new one."""
        given = request.request_id if request is not None else None
        if given is not None and REQUEST_ID.fullmatch(given := given.strip(OWS)):
            return REQUEST_ID_LINE % given
        return self.line_head + COUNT_HEX % next(self.count)

    def begin(self, request: Request | None) -> Ids:
        """A request's ids, as soon as it is read (``request`` is None when it could not be)."""
        if request is None or (request.traceparent is None and request.request_id is None):
            return self.line_head + COUNT_HEX % next(self.count), NO_TRACE, None  # the usual request: no call
        caller = parse_traceparent(request.traceparent) if request.traceparent is not None else None
        return self.request_id(request), caller.trace_id if caller is not None else NO_TRACE, None

    def end(self, recorded: Any, method: str, route: str, status: int) -> None:
        """After the answer is made, for a recorded request: none without export."""

    def store_tracing(self) -> Any:
        """What the Couchbase store traces with (``otelexport.StoreTracing``); None: nothing."""
        return None

    def close(self) -> None:
        """At exit, after the drain: nothing to send without export."""
