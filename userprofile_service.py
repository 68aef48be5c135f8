#!/usr/bin/env python3
"""userprofile-service: user-profile lookups over HTTP, in front of Couchbase.

The request path reads top to bottom in this file:

  Handler.handle_one_request   wait for a request; httpparse.read_request parses it
  Service.respond              routes.match splits the path once; check the token;
                               one store call; the answer as bytes
  Handler.reply                status line, prebuilt headers and body in one write

Around it: the server (a thread per connection, a watchdog that enforces a
deadline on every phase of a connection, a graceful drain) and start-up.
The data access is behind ``store.Store`` (``sqlitestore.py``, ``cbconn.py``);
stored documents arrive as bytes and leave as bytes, never decoded and
re-encoded. Every setting is in ``settings.py``, every route in ``routes.py``.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import email.utils
import errno
import hmac
import io
import json
import os
import re
import resource
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

import routes
import settings
from httpparse import REASONS, HTTPError, Incomplete, Request, decode_param, read_request
from metrics import Metrics
from store import Store, StoreTimeout, StoreUnavailable

HERE = Path(__file__).resolve().parent

# -- prebuilt answers -------------------------------------------------------
STATUS_LINES = {code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in REASONS.items()}
JSON = b"application/json"
TEXT_METRICS = b"text/plain; version=0.0.4; charset=utf-8"
HEALTHY = b'{"status":"ok"}'
READY = b'{"status":"ready"}'
BEARER_CHALLENGE = b'WWW-Authenticate: Bearer realm="userprofile"\r\n'
IMAGE_TYPE = re.compile(r"[a-z0-9.+-]{1,32}")
NO_TOKEN_YET = "Service Unavailable: no service token has been read yet"

# The phases of a connection; each but BUSY has a deadline, enforced by the watchdog.
# BUSY (routing and the store call) is bounded by the store's own timeouts instead.
IDLE, HEADERS, BUSY, WRITING = "idle", "headers", "busy", "write"
# The client went away: not worth a log line.
CLIENT_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ENOTCONN, errno.ESHUTDOWN, errno.ETIMEDOUT)


def error_body(message: str) -> bytes:
    return json.dumps({"status": "failure", "message": {"error": message}}, separators=(",", ":")).encode()


def log(message: str) -> None:
    """Service events on stderr, one line each. Never a token or a password."""
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
    sys.stderr.write(f"{stamp} {message}\n")
    sys.stderr.flush()


def where(exc: BaseException) -> str:
    """The frames of an exception as one line: file:line in function, outermost first."""
    frames = traceback.extract_tb(exc.__traceback__)
    return " > ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames)


class Answer(NamedTuple):
    status: int
    body: bytes
    content_type: bytes = JSON
    extra: bytes = b""  # more header lines
    close: bool = False  # the connection must close after this answer


def refusal(err: HTTPError) -> Answer:
    return Answer(err.status, error_body(err.message), extra=err.extra, close=err.close)


class Service:
    """Requests in, answers out: the routes, the token check and the store call.
    No socket here, so a request can be answered in-process (tests/requests)."""

    def __init__(self, store: Store, tokens: TokenKeeper, metrics: Metrics, openapi: bytes,
                 render_metrics=None):
        self.store = store
        self.tokens = tokens
        self.metrics = metrics
        self.openapi = openapi
        self.render_metrics = render_metrics or (lambda: metrics.render(0, 0))
        self.handlers = {route: getattr(self, route.handler) for route in routes.ROUTES}
        self._last_store_log = 0.0

    def respond(self, request: Request) -> tuple[str, Answer]:
        """The route's name (for metrics and the access log) and the answer to one request.
        Every failure becomes its status, never an exception."""
        route, param = routes.match(request.path)
        name = route.name if route is not None else routes.NO_ROUTE
        try:
            if route is None:
                raise HTTPError(404)
            if request.method not in route.methods:
                raise HTTPError(405, extra=route.allow)
            if route.needs_token:
                self.authorize(request.token)
            if param is None:
                return name, self.handlers[route]()
            value = decode_param(param)
            if not value:
                raise HTTPError(404)
            return name, self.handlers[route](value)
        except HTTPError as err:
            return name, refusal(err)
        except StoreTimeout as exc:
            self.store_failed("timeout", exc)
            return name, Answer(504, error_body(REASONS[504]))
        except StoreUnavailable as exc:
            self.store_failed("unavailable", exc)
            return name, Answer(503, error_body(REASONS[503]))
        except Exception as exc:  # a bug of ours: answer 500, log one line, keep serving
            self.bug(name, exc)
            return name, Answer(500, error_body(REASONS[500]), close=True)

    def authorize(self, given: bytes | None) -> None:
        token = self.tokens.token
        if token is None:
            # No token could be read: refuse the API rather than serve it unauthenticated.
            raise HTTPError(503, NO_TOKEN_YET)
        if not given or not hmac.compare_digest(given, token):
            raise HTTPError(401, extra=BEARER_CHALLENGE)

    # -- the routes' handlers (routes.ROUTES names them) ----------------------
    def profile_by_id(self, record_id: str) -> Answer:
        return document(self.store.get_profile(record_id))

    def profiles_by_nickname(self, nickname: str) -> Answer:
        return documents(self.store.find_by_nickname(nickname))

    def profile_by_username(self, username: str) -> Answer:
        return documents(self.store.find_by_username(username))

    def image_record(self, record_id: str) -> Answer:
        return document(self.store.get_image(record_id))

    def image_raw(self, record_id: str) -> Answer:
        doc = self.store.get_image(record_id)
        if doc is None:
            raise HTTPError(404)
        # The one route that must look inside a document: to decode the image.
        image = json.loads(doc)
        data = base64.b64decode(image["image"], validate=True)
        kind = str(image.get("type", "")).lower()
        content_type = f"image/{kind}".encode() if IMAGE_TYPE.fullmatch(kind) else b"application/octet-stream"
        return Answer(200, data, content_type)

    def liveness(self) -> Answer:
        return Answer(200, HEALTHY)

    def readiness(self) -> Answer:
        if self.tokens.token is None:
            raise HTTPError(503, NO_TOKEN_YET)
        self.store.ping()  # StoreUnavailable becomes 503 (StoreTimeout 504)
        return Answer(200, READY)

    def exposition(self) -> Answer:
        return Answer(200, self.render_metrics(), TEXT_METRICS)

    def openapi_json(self) -> Answer:
        return Answer(200, self.openapi)

    # -- failures -------------------------------------------------------------
    def store_failed(self, kind: str, exc: Exception) -> None:
        self.metrics.store_error(kind)
        now = time.monotonic()
        if now - self._last_store_log >= 1.0:  # at most a line a second under a fault
            self._last_store_log = now
            log(f"store {kind}: {exc}")

    def bug(self, route: str, exc: Exception) -> None:
        line = f"error: {type(exc).__name__}: {exc} at {where(exc)} (route {route})"
        token = self.tokens.token
        if token:  # whatever the exception held, the token never reaches the log
            line = line.replace(token.decode(errors="replace"), "***")
        log(line)


def documents(docs: list[bytes]) -> Answer:
    """Stored JSON documents as a JSON array, never decoded: 404 when there are none."""
    if not docs:
        raise HTTPError(404)
    return Answer(200, b"[" + b",".join(docs) + b"]")


def document(doc: bytes | None) -> Answer:
    """One stored JSON document as a JSON array of one, never decoded: 404 when there is none."""
    if doc is None:
        raise HTTPError(404)
    return Answer(200, b"[" + doc + b"]")


class Handler(BaseHTTPRequestHandler):
    """One client connection: requests are read and answered in turn (keep-alive)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # the answer is one write; never let Nagle hold it

    server: UserProfileServer

    # -- connection ---------------------------------------------------------
    def setup(self):
        super().setup()
        # Read through a FileIO on the socket's descriptor, all in C: the reader that
        # setup() made (socket.makefile) runs Python (SocketIO.readinto) on every read,
        # about 1 us a request. A FileIO needs a blocking socket, and this one is: no
        # socket timeout, as deadlines end a blocked read with shutdown() (expire).
        self.rfile.close()
        self.rfile = open(self.connection.fileno(), "rb", buffering=io.DEFAULT_BUFFER_SIZE, closefd=False)

    def handle(self):
        server = self.server
        self.phase = IDLE
        self.deadline = float("inf")
        self.expired = False
        server.connections[self.connection] = self
        self.close_connection = False
        try:
            while not self.close_connection and not server.draining:
                self.handle_one_request()
        except OSError as exc:
            if self.expired and self.phase == WRITING:
                server.metrics.timed_out(WRITING)
            elif exc.errno not in CLIENT_GONE and not self.expired:
                log(f"error: connection from {self.client_address[0]}: {exc!r}")

    def expire(self) -> None:
        """Called by the watchdog when this connection's phase is past its deadline:
        wake the blocked read (or write) so the connection ends."""
        self.expired = True
        try:
            # A read is cut so that a 408 can still be written; a write has nowhere to go.
            self.connection.shutdown(socket.SHUT_RDWR if self.phase == WRITING else socket.SHUT_RD)
        except OSError:
            pass

    # -- one request --------------------------------------------------------
    def handle_one_request(self):
        server = self.server
        self.phase, self.deadline = IDLE, time.monotonic() + server.options.idle_timeout
        if not self.rfile.peek(1):  # wait for the first byte: closed, idle too long, or draining
            if self.expired:
                server.metrics.timed_out(IDLE)
            self.close_connection = True
            return
        started = time.monotonic()
        self.phase, self.deadline = HEADERS, started + server.options.header_timeout
        request = None
        try:
            request = read_request(self.rfile, server.options)
        except HTTPError as err:  # the parser's errors all close: the request's framing is in doubt
            route, answer = routes.NO_ROUTE, refusal(err)
        except Incomplete:
            if not self.expired:
                self.close_connection = True  # the client left mid-request
                return
            server.metrics.timed_out(HEADERS)
            route, answer = routes.NO_ROUTE, Answer(408, error_body("Request not received in time"), close=True)
        if request is None:
            reply = self.reply(None, answer)
        else:
            self.phase = BUSY
            with server.turn:  # see UserProfileServer.__init__
                route, answer = server.service.respond(request)
                reply = self.write_without_waiting(self.reply(request, answer))
        if reply:
            self.phase, self.deadline = WRITING, time.monotonic() + server.options.write_timeout
            self.connection.sendall(reply)
        elapsed = time.monotonic() - started
        server.metrics.observe(route, answer.status, elapsed)
        if server.options.access_log:
            server.log_access(request.method if request else "-", route, answer.status, elapsed, len(answer.body))

    def reply(self, request: Request | None, answer: Answer) -> bytes:
        """The whole answer, status line, headers and body, for one write."""
        extra = answer.extra
        if request is None or not request.keep_alive or answer.close or self.server.draining:
            self.close_connection = True
            extra += b"Connection: close\r\n"
        elif request.keep_alive_10:
            extra += b"Connection: keep-alive\r\n"
        head = b"%sContent-Type: %s\r\nContent-Length: %d\r\n%s%s\r\n" % (
            STATUS_LINES[answer.status], answer.content_type, len(answer.body), self.server.date_header, extra)
        return head if request is not None and request.head else head + answer.body

    def write_without_waiting(self, reply: bytes) -> bytes:
        """Write what the socket takes now, and return the rest: a client slow to
        read gets it later, outside the turn, so it never holds the turn."""
        try:
            written = self.connection.send(reply, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return reply
        return reply[written:]

    def log_message(self, format, *args):
        pass  # the server writes its own access log


class TokenKeeper:
    """The bearer token from ``service_auth:1``: read at start-up, then re-read
    every ``refresh`` seconds so a rotated token takes effect without a restart."""

    def __init__(self, store: Store, refresh: float):
        self.store = store
        self.refresh = refresh
        self.token: bytes | None = None
        self._problem: str | None = None
        self._stop = threading.Event()

    def read(self) -> None:
        try:
            value = self.store.read_token()
        except StoreUnavailable as exc:
            self._report(f"token: cannot read service_auth:1 from the store ({exc})"
                         + ("; the API answers 503 until it can" if self.token is None else
                            "; keeping the token read before"))
            return
        if not value:
            self.token = None
            self._report("token: service_auth:1 has no token; the API answers 503 (run loaddata.py)")
            return
        token = value.encode()
        if self.token is not None and token != self.token:
            log("token: a rotated token was read and is now in force")
        elif self.token is None:
            log("token: read from service_auth:1")
        self.token = token
        self._problem = None

    def _report(self, problem: str) -> None:
        if problem != self._problem:  # say it once, not at every retry
            log(problem)
            self._problem = problem

    def start(self) -> None:
        threading.Thread(target=self._run, name="token-refresh", daemon=True).start()

    def _run(self) -> None:
        # Without a token the API is down, so retry soon (backing off to 5 s), not
        # at the refresh interval: the store may come up at any moment.
        retry = 0.5
        while not self._stop.wait(self.refresh if self.token else retry):
            self.read()
            retry = min(retry * 2, 5.0, self.refresh) if self.token is None else 0.5

    def stop(self) -> None:
        self._stop.set()


class Line:
    """A lock that lets its waiters in in the order they came."""

    def __init__(self):
        self._mutex = threading.Lock()
        self._waiters: collections.deque = collections.deque()
        self.busy = False

    def __enter__(self):
        with self._mutex:
            if not self.busy:
                self.busy = True
                return
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        waiter.acquire()  # released by __exit__, which hands the lock over directly

    def __exit__(self, *exc):
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self.busy = False


class Turn:
    """Requests take turns (see UserProfileServer). A request takes a free turn
    at once, which is cheap; but a plain lock lets newcomers overtake waiters
    without limit, and under 512 connections some requests then waited over
    300 ms. So once a request has waited ``patience``, it lines up, newcomers
    line up behind it, and turns go in arrival order until the line is empty."""

    def __init__(self, patience: float):
        self._lock = threading.Lock()
        self._line = Line()
        self._patience = patience

    def __enter__(self):
        if not self._line.busy and self._lock.acquire(timeout=self._patience):
            return
        with self._line:
            self._lock.acquire()

    def __exit__(self, *exc):
        self._lock.release()


class UserProfileServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a deep listen backlog, a connection cap, a
    deadline on every phase of a connection, metrics, and a graceful drain."""

    daemon_threads = True

    def __init__(self, address, store: Store, tokens: TokenKeeper, options: argparse.Namespace,
                 reuse_port: bool = False):
        self.options = options
        self.metrics = Metrics()
        self.service = Service(store, tokens, self.metrics, (HERE / "openapi.json").read_bytes(),
                               self.render_metrics)  # openapi.json: openapi.yaml as JSON, served as it is
        self.request_queue_size = options.backlog  # the stdlib's 5 drops connections under load
        self.allow_reuse_port = reuse_port
        self.connections: dict[socket.socket, Handler | None] = {}  # dict ops are atomic under the GIL
        self.draining = False
        # An embedded store's lookup is a few microseconds of this process's
        # CPU, not a wait, so requests take turns from routing to the first
        # write of the answer. Without turns, every thread holding a request
        # contends for the interpreter lock at each of its releases (each SQLite
        # step, each socket call) and the unlucky ones wait many rounds. Measured
        # on one core (bench/): 32 connections went from ~21k req/s, p99 ~15 ms
        # to ~25k req/s, p99 ~4 ms; 512 connections from p99 0.5-1 s to ~55 ms.
        # Reading a request, and whatever the socket does not take at once, stay
        # outside the turn: a slow client never holds it. A network store's
        # lookups wait on the network and must overlap: no turns there.
        self.turn = Turn(patience=options.turn_patience) if store.serial else contextlib.nullcontext()
        self.date_header = b""
        self._stopped = threading.Event()
        self._tick()
        super().__init__(address, Handler)
        threading.Thread(target=self._watch, name="watchdog", daemon=True).start()

    def server_bind(self):
        # HTTPServer.server_bind resolves our own name (getfqdn), which can stall
        # start-up on a host without DNS; we never use that name.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address):
        if len(self.connections) >= self.options.max_connections:
            self.metrics.connection_rejected()
            try:
                request.setblocking(False)
                request.send(TOO_MANY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        self.connections[request] = None
        super().process_request(request, client_address)

    def close_request(self, request):
        self.connections.pop(request, None)
        super().close_request(request)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        log(f"error: connection from {client_address[0]}: {type(exc).__name__}: {exc} at {where(exc)}")

    # -- the watchdog -------------------------------------------------------
    def _tick(self):
        self.date_header = b"Date: %s\r\n" % email.utils.formatdate(usegmt=True).encode()

    def _watch(self):
        while not self._stopped.wait(self.options.watchdog_interval):
            self._tick()
            now = time.monotonic()
            for handler in list(self.connections.values()):
                if handler is not None and handler.phase != BUSY and handler.deadline < now:
                    handler.expire()

    # -- shutdown -----------------------------------------------------------
    def drain(self, grace: float) -> None:
        """Stop accepting, let requests in flight finish, close idle connections."""
        self.server_close()
        self.draining = True
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            for handler in list(self.connections.values()):
                if handler is not None and handler.phase == IDLE:
                    handler.expire()
            time.sleep(0.05)
        self._stopped.set()
        if self.connections:
            log(f"shutdown: {len(self.connections)} connections still open after {grace}s; closing")

    # -- reporting ----------------------------------------------------------
    def render_metrics(self) -> bytes:
        handlers = list(self.connections.values())
        in_flight = sum(1 for h in handlers if h is not None and h.phase != IDLE)
        return self.metrics.render(len(handlers), in_flight, self.service.store.counters())

    def log_access(self, method: str, route: str, status: int, seconds: float, size: int) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        sys.stdout.write(f"{stamp} method={method} route={route} status={status} "
                         f"ms={seconds * 1000:.3f} bytes={size}\n")


TOO_MANY_BODY = error_body("Service Unavailable: too many connections")
TOO_MANY = b"%sContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
    STATUS_LINES[503], len(TOO_MANY_BODY), TOO_MANY_BODY)


# -- start-up ---------------------------------------------------------------
def open_store(options: argparse.Namespace) -> Store:
    """The store the settings select: Couchbase when a host is set, else the embedded one.
    The chosen store's module is imported only then: the SDK loads only when it is used."""
    if options.couchbase_host:
        import cbconn

        return cbconn.CouchbaseStore.from_options(options)
    import sqlitestore

    return sqlitestore.SQLiteStore(options.db, busy_timeout=options.sqlite_busy_timeout)


def raise_fd_limit() -> None:
    """Each connection is a file descriptor: allow as many as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(options: argparse.Namespace, reuse_port: bool = False) -> int:
    """Run one server process until SIGTERM or SIGINT; exit 0 after draining."""
    # The handlers come first: as PID 1 in a container, a SIGTERM that arrives before
    # them is dropped by the kernel, and the pod would wait for its SIGKILL.
    server: UserProfileServer | None = None
    stopping = threading.Event()

    def stop(signum, frame):
        log(f"{signal.Signals(signum).name}: stop accepting, finish requests in flight")
        stopping.set()
        if server is not None:  # shutdown() waits for serve_forever() to return: not on this thread
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    raise_fd_limit()
    if options.access_log:
        sys.stdout.reconfigure(line_buffering=True)
    store = open_store(options)
    tokens = TokenKeeper(store, options.token_refresh)
    tokens.read()
    tokens.start()
    try:
        server = UserProfileServer((options.host, options.port), store, tokens, options, reuse_port=reuse_port)
    except OSError as exc:
        log(f"cannot listen on {options.host}:{options.port}: {exc}")
        return 1
    if not stopping.is_set():  # else stopped during start-up
        log(f"serving on http://{options.host}:{server.server_port} (pid {os.getpid()}, store: {store})")
        server.serve_forever(poll_interval=0.5)
    server.drain(options.shutdown_grace)
    tokens.stop()
    store.close()
    log("stopped")
    return 0


def serve_workers(options: argparse.Namespace) -> int:
    """N processes on one port (SO_REUSEPORT): the kernel spreads connections.
    Each opens its own store after the fork; the parent only supervises."""
    children: set[int] = set()
    stopping = False
    started = [0.0]
    exit_code = 0

    def spawn():
        started[0] = time.monotonic()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = serve(options, reuse_port=True)
            finally:
                os._exit(code)
        children.add(pid)

    def stop(signum, frame):
        nonlocal stopping
        stopping = True
        for pid in children:
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(options.workers):
        spawn()
    while children:
        pid, status = os.wait()
        children.discard(pid)
        if stopping:
            continue
        code = os.waitstatus_to_exitcode(status)
        if code != 0 and time.monotonic() - started[0] < 5:
            log(f"worker {pid} failed at start-up ({code}); stopping")  # e.g. the port is taken
            stop(signal.SIGTERM, None)
            exit_code = 1
            continue
        log(f"worker {pid} exited ({code}); starting another")
        time.sleep(1)
        spawn()
    return exit_code


def main(argv=None) -> int:
    options = settings.load(argv)
    return serve_workers(options) if options.workers > 1 else serve(options)


if __name__ == "__main__":
    sys.exit(main())
