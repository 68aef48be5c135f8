"""One client connection: its rules over a reader and a writer, and the socket that drives them.

The request path, top to bottom:

  Conversation.step   wait for a request's first byte; httpparse.read_request parses it
  Service.do_GET      (service.py) the route, the token, one store call: an Answer
  Conversation.reply  builds the status line, prebuilt headers and body as one bytes object,
                      which step writes at once (Writer.send_now); what the socket does not
                      take, after the turn

An answer closes its connection, and says so, when the request asked for it
(HTTP/1.0 without keep-alive, ``Connection: close``), when the answer needs it
(a request whose framing is in doubt, a 500), when the server is draining
(SIGTERM), or when the connection has had its answers or its age
(MAX_REQUESTS_PER_CONNECTION, MAX_CONNECTION_AGE_SECONDS): recycled, so that
instances added behind an L4 balancer get their share and one connection's
work is bounded. Any other answer keeps the connection open and says how long
it may idle (``Keep-Alive: timeout=N``). The server never cuts a connection
between answers except at a deadline; when it closes first, it lingers.

``Conversation`` needs no socket (tests/test_hostile.py runs the request corpus
through it on bytes); ``Handler``, an ``http.server.BaseHTTPRequestHandler``, runs
one over a socket, and the server's watchdog ends a phase past its deadline
(``Conversation.overdue``) with ``Handler.expire``.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import http.server
import io
import random
import socket
import time
from contextlib import AbstractContextManager
from typing import Any, Protocol, TextIO, cast

import httpparse
import routes
from answers import STATUS_LINES, Answer, HTTPError, refusal, unavailable
from httpparse import Incomplete, Request, read_request
from logs import log, stamp
from options import Options
from tracecontext import Traces, request_id_of

# On every answer: a browser must not guess another type than the one said (a JSON error
# rendered as HTML, say).
NOSNIFF = b"X-Content-Type-Options: nosniff\r\n"
# status line, type, length, then the Date and the answer's own lines
HEAD = b"%sContent-Type: %s\r\nContent-Length: %d\r\n" + NOSNIFF + b"%s%s\r\n"
NOT_MODIFIED = STATUS_LINES[304] + NOSNIFF + b"%s%s\r\n"  # no body, and nothing said of one (RFC 9110 15.4.5)

# The phases of a connection; each but BUSY has a deadline, enforced by the server's watchdog.
# BUSY (routing and the store call) is bounded by the store's own timeouts instead.
IDLE, HEADERS, BUSY, WRITING = "idle", "headers", "busy", "write"
# The phases with a deadline, and what a connection ended at one did not do: the label values
# of metrics' timed-out counter, and their explanation.
DEADLINES = {IDLE: "no next request", HEADERS: "request not received in time", WRITING: "answer not taken"}
# The client went away: not worth a log line.
CLIENT_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ENOTCONN, errno.ESHUTDOWN, errno.ETIMEDOUT)
# Connections born together (a client's pool, a restarted balancer) would all be recycled at
# once; each one's age limit is lowered by up to this share to spread them.
AGE_SPREAD = 0.1
# When the server closes first, what the client still sends is read and dropped, for up to this
# many seconds and bytes: closing a socket with unread bytes sends a reset, which can destroy
# answers the client has not read yet (a pipelining client's, or one sent just before the close).
# A client that sends more than that is not reading its answers anyway.
LINGER = 2.0
LINGER_BYTES = 1 << 20
# What the kernel may hold of a connection's answers that its client has not taken. A client
# that pipelines and never reads is served only until this and its own receive window are full;
# then a write blocks and the write deadline bites. Left to itself, Linux grows the buffer to
# tcp_wmem's 4 MiB, thousands of queued answers that 30 such clients at once would have served
# to them before the deadline could start (and an nginx or h11 would not have). An answer here
# is a few kB, so a client that reads at all never waits on this bound.
SEND_BUFFER = 64 * 1024


def keep_alive_header(idle_timeout: float) -> bytes:
    """What a keep-alive answer says of the idle timeout: a second under it, so that a client
    that honours it (Node's http.Agent, undici) retires the connection before the server does."""
    seconds = int(idle_timeout) - 1
    return b"Keep-Alive: timeout=%d\r\n" % seconds if seconds >= 1 else b""


class Counts(Protocol):
    """What a connection counts (``metrics.Metrics``)."""

    def observe(self, route: str, status: int, seconds: float) -> None: ...

    def timed_out(self, phase: str) -> None: ...


class Draining(Protocol):
    @property
    def draining(self) -> bool: ...


class Responder(Protocol):
    """What answers a connection's requests (``service.Service``)."""

    @property
    def metrics(self) -> Counts: ...

    @property
    def drain(self) -> Draining: ...

    def do_GET(self, request: Request) -> tuple[str, Answer]: ...


class Site:
    """What every connection of one server shares."""

    def __init__(
        self,
        service: Responder,
        options: Options,
        turn: AbstractContextManager | None = None,
        access_log: TextIO | None = None,
        traces: Traces | None = None,
    ) -> None:
        self.service = service
        self.metrics = service.metrics
        self.drain = service.drain  # the server's: draining after SIGTERM
        self.options = options  # the settings (settings.py): limits, timeouts, recycling
        self.turn: AbstractContextManager = turn if turn is not None else contextlib.nullcontext()
        self.access_log = access_log  # a text stream, or None
        self.traces = traces if traces is not None else Traces()  # request ids, trace context, export
        self.keep_alive = keep_alive_header(options.idle_timeout)
        self.date_header = b""
        self.tick()

    def tick(self) -> None:
        """The Date header, renewed by the server's watchdog rather than formatted per answer."""
        self.date_header = b"Date: %s\r\n" % email.utils.formatdate(usegmt=True).encode()


class Reader(httpparse.Reader, Protocol):
    """A connection's buffered reader: the parser's, and a look at the next byte without taking it."""

    def peek(self, size: int = 0, /) -> bytes: ...


class Writer(Protocol):
    def send_now(self, data: bytes) -> bytes:
        """Write what can be written without waiting; return the rest."""
        ...

    def send_all(self, data: bytes) -> None:
        """Write all of it, waiting as long as it takes (a deadline may cut the wait)."""
        ...


class Conversation:
    """The rules of one HTTP/1.x connection over a buffered reader (``peek``, ``readline``,
    ``read``) and a ``Writer``: requests are read and answered in turn until one closes."""

    def __init__(self, rfile: Reader, writer: Writer, site: Site) -> None:
        self.rfile = rfile
        self.writer = writer
        self.site = site
        options = site.options
        self.phase = IDLE
        self.deadline = float("inf")  # of the phase
        self.expired = False  # a deadline, or the drain, cut the wait
        self.closing = False  # no further request: an answer said so, or the client left
        self.answers_left = options.max_requests_per_connection or -1  # -1: counts down, never to 0
        age = options.max_connection_age
        spread = 1 - AGE_SPREAD * random.random()  # nosec B311  # a spread of times, not a secret
        self.retire_at = time.monotonic() + age * spread if age else float("inf")

    def overdue(self, now: float, idled_out: float = -1.0) -> bool:
        """The watchdog's rule: past its phase's deadline (BUSY has none: the store's own timeouts
        bound it), or idle since before ``idled_out`` (while draining: idle DRAIN_IDLE_SECONDS)."""
        if self.phase == IDLE:
            return self.deadline < now or self.deadline <= idled_out
        return self.phase != BUSY and self.deadline < now

    def step(self) -> None:
        """Wait for one request, answer it and write the answer."""
        site = self.site
        options = site.options
        self.phase, self.deadline = IDLE, time.monotonic() + options.idle_timeout
        if not self.rfile.peek(1):  # the client closed, or it idled past a deadline or the drain
            if self.expired and not site.drain.draining:
                site.metrics.timed_out(IDLE)
            self.closing = True
            return
        started = time.monotonic()
        self.phase, self.deadline = HEADERS, started + options.header_timeout
        request = None
        try:
            request = read_request(self.rfile, options)
        except HTTPError as err:  # the parser's errors all close: the request's framing is in doubt
            route, answer = routes.NO_ROUTE, refusal(err)
        except Incomplete:
            if not self.expired:
                self.closing = True  # the client left mid-request
                return
            site.metrics.timed_out(HEADERS)
            route, answer = routes.NO_ROUTE, refusal(HTTPError(408, "Request not received in time", close=True))
        # Its request id (the answer's header line) and trace id; with export, a recorded request's span begins.
        id_line, trace_id, recorded = site.traces.begin(request)
        if request is None:
            rest = self.reply(None, answer, started, id_line)
        else:
            self.phase = BUSY
            with site.turn:  # see server.py
                # Every method: the route table says which a route answers (routes.match).
                route, answer = site.service.do_GET(request)
                if recorded is not None:  # the span covers the request until its answer is made
                    site.traces.end(recorded, request.method, route, answer.status)
                rest = self.writer.send_now(self.reply(request, answer, started, id_line))
        if rest:  # a client slow to read gets the rest outside the turn, so it never holds it
            self.phase, self.deadline = WRITING, time.monotonic() + options.write_timeout
            self.writer.send_all(rest)
        elapsed = time.monotonic() - started
        site.metrics.observe(route, answer.status, elapsed)
        if site.access_log is not None:
            log_access(
                site.access_log,
                request.method if request else "-",
                route,
                answer.status,
                elapsed,
                len(answer.body),
                getattr(request, "caller", "-"),  # set by the token check, if it let the request in
                id_line,
                trace_id,
            )

    def reply(self, request: Request | None, answer: Answer, started: float, id_line: bytes) -> bytes:
        """Builds the whole answer, status line, headers and body, as one bytes object for one
        write (the caller writes it); ``id_line`` is its X-Request-Id header line."""
        site = self.site
        extra = answer.extra + id_line
        self.answers_left -= 1
        if (
            request is None
            or not request.keep_alive
            or answer.close
            or site.drain.draining
            or self.answers_left == 0
            or started >= self.retire_at
        ):
            self.closing = True
            extra += b"Connection: close\r\n"
        elif request.keep_alive_10:
            extra += b"Connection: keep-alive\r\n" + site.keep_alive
        else:
            extra += site.keep_alive
        if answer.status == 304:
            return NOT_MODIFIED % (site.date_header, extra)
        head = HEAD % (STATUS_LINES[answer.status], answer.content_type, len(answer.body), site.date_header, extra)
        return head if request is not None and request.head else head + answer.body


def too_many_connections(site: Site) -> bytes:
    """The whole answer to a connection beyond the cap, sent as it is closed."""
    answer = refusal(unavailable(site.options.retry_after, "Service Unavailable: too many connections"))
    extra = answer.extra + b"Connection: close\r\n"
    return HEAD % (STATUS_LINES[503], answer.content_type, len(answer.body), site.date_header, extra) + answer.body


def log_access(
    stream: TextIO,
    method: str,
    route: str,
    status: int,
    seconds: float,
    size: int,
    caller: str,
    id_line: bytes,
    trace_id: str,
) -> None:
    """One line per answer; ``caller`` is who the token check let in (auth.py), never the token."""
    stream.write(
        f"{stamp()} method={method} route={route} status={status} ms={seconds * 1000:.3f} bytes={size}"
        f" caller={caller} request_id={request_id_of(id_line)} trace_id={trace_id}\n"
    )


class SocketWriter:
    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def send_now(self, data: bytes) -> bytes:
        try:
            written = self.sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return data
        return data[written:]

    def send_all(self, data: bytes) -> None:
        self.sock.sendall(data)


class Registry(Protocol):
    """Where a handler registers itself once its thread runs (``server.Connections``)."""

    def started(self, sock: Any, handler: Any) -> None: ...


class Host(Protocol):
    """What a handler needs of its server (``server.UserProfileServer``)."""

    site: Site
    connections: Registry


class Handler(http.server.BaseHTTPRequestHandler):
    """A conversation over one client socket, in its own thread: the standard library's request
    handler, whose ``handle`` loop runs ``handle_one_request`` until ``close_connection``; each
    request is one step of the ``Conversation``, which reads, answers and writes it."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # the answer is one write
    request: socket.socket

    def setup(self) -> None:
        # StreamRequestHandler's setup, but reading through a FileIO on the socket's descriptor,
        # all in C (socket.makefile's reader runs Python on every read). A FileIO needs a blocking
        # socket, and this one is: no socket timeout, as deadlines end a blocked read with
        # shutdown() (expire).
        self.connection = sock = self.request
        if self.disable_nagle_algorithm:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self.rfile = io.BufferedReader(io.FileIO(sock.fileno(), "rb", closefd=False), io.DEFAULT_BUFFER_SIZE)
        host = cast(Host, self.server)
        self.site = host.site
        self.conversation = Conversation(self.rfile, SocketWriter(sock), self.site)
        host.connections.started(sock, self)

    def handle_one_request(self) -> None:
        """Wait for one request, answer it and write the answer; close_connection once one closes."""
        conversation = self.conversation
        try:
            conversation.step()
        except OSError as exc:
            self.close_connection = True
            if conversation.expired and conversation.phase == WRITING:
                self.site.metrics.timed_out(WRITING)
            elif exc.errno not in CLIENT_GONE and not conversation.expired:
                log(f"error: connection from {self.client_address[0]}: {exc!r}")
            return
        self.close_connection = conversation.closing

    def finish(self) -> None:
        self.rfile.close()
        if self.conversation.closing and not self.conversation.expired:
            linger(self.request)

    def expire(self) -> None:
        """Called by the watchdog when this connection's phase is past its deadline (or idle
        while draining): wake the blocked read (or write) so the connection ends."""
        conversation = self.conversation
        conversation.expired = True
        with contextlib.suppress(OSError):
            # A read is cut so that a 408 can still be written; a write has nowhere to go.
            self.request.shutdown(socket.SHUT_RDWR if conversation.phase == WRITING else socket.SHUT_RD)


def linger(sock: socket.socket) -> None:
    """Close our side first, then drop what the client still sends until it closes (see LINGER)."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(LINGER)
        until, left = time.monotonic() + LINGER, LINGER_BYTES
        while left > 0 and time.monotonic() < until and (dropped := len(sock.recv(65536))):
            left -= dropped
    except OSError:
        pass
