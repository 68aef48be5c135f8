#!/usr/bin/env python3
"""userprofile-service: user-profile lookups over HTTP, in front of Couchbase.

The whole request path is in this file and reads top to bottom:

  Handler.handle_one_request   read the request line and headers (a lean parser
                               of our own, not the standard library's email one)
  Handler.do_GET               split the path once, one if/elif chain of routes
  Handler.answer               prebuilt header bytes + the stored JSON, then one sendall

The data access is behind ``store.Store`` (``sqlitestore.py``, ``cbconn.py``).
Stored documents arrive as bytes and leave as bytes; nothing on the request
path decodes and re-encodes a profile.

The server is a ``ThreadingHTTPServer``: a thread per client connection. On
the embedded store requests take turns (``Turn``) from routing to the first
write of the answer, so threads do not fight over the interpreter lock. A
watchdog thread enforces the header and idle timeouts (so sockets stay in
blocking mode, with no timeout bookkeeping per read) and refreshes the Date
header.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import email.utils
import hmac
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
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote_to_bytes

from metrics import Metrics
from store import Store, StoreTimeout, StoreUnavailable, open_store

HERE = Path(__file__).resolve().parent

# -- limits on what a client may send ---------------------------------------
MAX_REQUEST_LINE = 8192  # longer: 414
MAX_HEADER_LINE = 8192  # longer: 431
MAX_HEADERS = 100  # more: 431
MAX_HEADER_BYTES = 65536  # more in all: 431
MAX_BODY = 65536  # a GET body is read and discarded up to this; more: 413

# -- prebuilt answers -------------------------------------------------------
REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable",
    504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}
STATUS_LINES = {code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in REASONS.items()}
JSON = b"application/json"
TEXT_METRICS = b"text/plain; version=0.0.4; charset=utf-8"
HEALTHY = b'{"status":"ok"}'
READY = b'{"status":"ready"}'
ALLOW = b"Allow: GET, HEAD\r\n"
BEARER_CHALLENGE = b'WWW-Authenticate: Bearer realm="userprofile"\r\n'

# Route names, as they appear in metrics and access logs (never the parameter).
ROUTE_ID = "/api/v1/id"
ROUTE_NICKNAME = "/api/v1/nickname"
ROUTE_USERNAME = "/api/v1/username"
ROUTE_RECORD = "/api/v1/picture/record"
ROUTE_RAW = "/api/v1/picture/raw"
ROUTE_OPENAPI = "/api/v1/openapi.json"
ROUTE_OTHER = "other"
API_ROUTES = {"id": ROUTE_ID, "nickname": ROUTE_NICKNAME, "username": ROUTE_USERNAME}
PICTURE_ROUTES = {"record": ROUTE_RECORD, "raw": ROUTE_RAW}
PLAIN_ROUTES = {"/healthz", "/readyz", "/metrics", ROUTE_OPENAPI}

# -- what a well-formed request looks like ----------------------------------
METHOD = re.compile(rb"[A-Z]{1,20}")
HEADER_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token; also refuses obs-fold
BAD_HEADER_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
BAD_TARGET = re.compile(rb"[^\x21-\x7e]")  # a request target is visible ASCII
BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
CONTROL = re.compile("[\x00-\x1f\x7f]")
IMAGE_TYPE = re.compile(r"[a-z0-9.+-]{1,32}")

# Connection phases, for the watchdog.
IDLE, HEADERS, BUSY = 0, 1, 2


class HTTPError(Exception):
    """An answer other than 200, in the JSON error shape of SPEC."""

    def __init__(self, status: int, message: str | None = None, close: bool = False, extra: bytes = b""):
        super().__init__(status)
        self.status = status
        self.message = message or REASONS[status]
        self.close = close  # the connection can no longer be trusted to frame requests
        self.extra = extra  # more header lines


class ClientGone(Exception):
    """The client closed its end in the middle of a request."""


def error_body(message: str, **more: str) -> bytes:
    return json.dumps({"status": "failure", "message": {"error": message, **more}}, separators=(",", ":")).encode()


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


def log(message: str) -> None:
    """Service events on stderr, one line each. Never a token or a password."""
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
    sys.stderr.write(f"{stamp} {message}\n")
    sys.stderr.flush()


class Handler(BaseHTTPRequestHandler):
    """One client connection: requests are read and answered in turn (keep-alive)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # the answer is one write; never let Nagle hold it

    server: UserProfileServer

    # -- connection ---------------------------------------------------------
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
        except OSError:
            pass  # reset, broken pipe: the client is gone

    def expire(self) -> None:
        """Called by the watchdog: wake the blocked read so this connection ends."""
        self.expired = True
        try:
            self.connection.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    # -- one request --------------------------------------------------------
    def handle_one_request(self):
        server = self.server
        self.phase = IDLE
        self.deadline = time.monotonic() + server.idle_timeout
        if not self.rfile.peek(1):  # wait for the first byte: closed, idle too long, or draining
            self.close_connection = True
            return
        started = time.monotonic()
        self.phase = HEADERS
        self.deadline = started + server.header_timeout
        self.route = ROUTE_OTHER
        self.command = ""
        self.status = 0
        self.sent = 0
        self.head = False
        self.keep_alive_10 = False
        try:
            self.read_request()
            self.phase = BUSY
            with server.turn:  # see UserProfileServer.__init__
                if self.command == "GET" or self.command == "HEAD":
                    self.do_GET()
                else:
                    self.do_other()
                self.write_without_waiting()
        except HTTPError as err:
            if err.close:
                self.close_connection = True
            self.answer(err.status, error_body(err.message), extra=err.extra)
        except StoreTimeout as exc:
            server.store_failed("timeout", exc)
            self.answer(504, error_body(REASONS[504]))
        except StoreUnavailable as exc:
            server.store_failed("unavailable", exc)
            self.answer(503, error_body(REASONS[503]))
        except ClientGone:
            self.close_connection = True
            return
        except OSError:
            raise
        except Exception as exc:  # a bug of ours: answer 500, log one line, keep serving
            tb = exc.__traceback__
            while tb.tb_next:
                tb = tb.tb_next
            log(f"error: {type(exc).__name__}: {exc} at line {tb.tb_lineno} ({self.route})")
            self.close_connection = True
            self.answer(500, error_body(REASONS[500]))
        if self.reply:
            self.connection.sendall(self.reply)
        elapsed = time.monotonic() - started
        server.metrics.observe(self.route, self.status, elapsed)
        if server.access_log:
            server.log_access(self.command, self.route, self.status, elapsed, self.sent)

    def read_request(self):
        """Parse the request line and headers; keep only what the routes need."""
        readline = self.rfile.readline
        line = readline(MAX_REQUEST_LINE + 1)
        if line == b"\r\n" or line == b"\n":  # a stray blank line between requests is allowed
            line = readline(MAX_REQUEST_LINE + 1)
        if not line.endswith(b"\n"):
            if len(line) > MAX_REQUEST_LINE:
                raise HTTPError(414, close=True)
            raise self.cut_short()
        parts = line.rstrip(b"\r\n").split(b" ")
        if len(parts) != 3:
            raise HTTPError(400, "Malformed request line", close=True)
        method, target, version = parts
        if version == b"HTTP/1.1":
            self.close_connection = False
            self.keep_alive_10 = False
        elif version == b"HTTP/1.0":
            self.close_connection = True  # unless it asks for keep-alive
            self.keep_alive_10 = False
        elif version[:5] == b"HTTP/" and version[5:6] in (b"2", b"3"):
            raise HTTPError(505, close=True)
        else:
            raise HTTPError(400, "Malformed request line", close=True)
        if not METHOD.fullmatch(method) or not target or BAD_TARGET.search(target):
            raise HTTPError(400, "Malformed request line", close=True)
        self.command = method.decode()
        self.head = method == b"HEAD"
        self.request_version = version.decode()
        path = target.decode().partition("?")[0].partition("#")[0]
        if not path.startswith("/"):
            # absolute-form (RFC 9112 3.2.2): a server must accept it; the authority is ignored
            scheme, sep, rest = path.partition("://")
            if not sep or scheme.lower() not in ("http", "https"):
                raise HTTPError(400, "Malformed request target", close=True)
            path = "/" + rest.partition("/")[2]
        self.path = path

        self.token_given = None
        bearer = access_token = content_length = None
        count = size = 0
        while True:
            line = readline(MAX_HEADER_LINE + 1)
            if line == b"\r\n" or line == b"\n":
                break
            if not line.endswith(b"\n"):
                if len(line) > MAX_HEADER_LINE:
                    raise HTTPError(431, close=True)
                raise self.cut_short()
            count += 1
            size += len(line)
            if count > MAX_HEADERS or size > MAX_HEADER_BYTES:
                raise HTTPError(431, close=True)
            name, colon, value = line.partition(b":")
            value = value.strip()
            if not colon or not HEADER_NAME.fullmatch(name) or BAD_HEADER_VALUE.search(value):
                raise HTTPError(400, "Malformed header", close=True)
            name = name.lower()
            if name == b"authorization":
                if bearer is not None:
                    raise HTTPError(400, "More than one Authorization header", close=True)
                scheme, _, credentials = value.partition(b" ")
                bearer = credentials.strip() if scheme.lower() == b"bearer" else b""
            elif name == b"x-access-token":
                if access_token is not None:
                    raise HTTPError(400, "More than one x-access-token header", close=True)
                access_token = value
            elif name == b"connection":
                value = value.lower()
                if b"close" in value:
                    self.close_connection = True
                elif b"keep-alive" in value and self.request_version == "HTTP/1.0":
                    self.close_connection = False
                    self.keep_alive_10 = True
            elif name == b"content-length":
                if not value.isdigit() or (content_length is not None and int(value) != content_length):
                    raise HTTPError(400, "Bad Content-Length", close=True)
                content_length = int(value)
            elif name == b"transfer-encoding":
                # A GET has no body worth framing; refusing it also closes the door
                # on request smuggling through Content-Length/Transfer-Encoding games.
                raise HTTPError(400, "Transfer-Encoding is not accepted", close=True)
        self.token_given = bearer if bearer is not None else access_token
        if content_length:
            if content_length > MAX_BODY:
                raise HTTPError(413, close=True)
            if len(self.rfile.read(content_length)) < content_length:
                raise self.cut_short()

    def cut_short(self) -> Exception:
        """The request stopped before its end: the watchdog's timeout, or the client left."""
        if self.expired:
            self.close_connection = True
            return HTTPError(408, "Request headers not received in time", close=True)
        return ClientGone()

    # -- routes -------------------------------------------------------------
    def do_GET(self):
        """Split the path once and dispatch; every helper ends in one answer()."""
        parts = self.path.split("/")
        n = len(parts)
        if n == 5 and parts[1] == "api" and parts[2] == "v1" and parts[3] in API_ROUTES:
            kind = parts[3]
            self.route = API_ROUTES[kind]
            self.authorize()
            value = decode_param(parts[4])
            store = self.server.store
            if kind == "id":
                doc = store.get_profile(value) if value else None
                self.answer_docs([doc] if doc is not None else [])
            elif kind == "nickname":
                self.answer_docs(store.find_by_nickname(value) if value else [])
            else:
                self.answer_docs(store.find_by_username(value) if value else [])
        elif n == 6 and parts[1] == "api" and parts[2] == "v1" and parts[3] == "picture" \
                and parts[4] in PICTURE_ROUTES:
            self.route = PICTURE_ROUTES[parts[4]]
            self.authorize()
            value = decode_param(parts[5])
            doc = self.server.store.get_image(value) if value else None
            if parts[4] == "record":
                self.answer_docs([doc] if doc is not None else [])
            else:
                self.answer_image(doc)
        elif self.path == "/healthz":
            self.route = "/healthz"
            self.answer(200, HEALTHY)
        elif self.path == "/readyz":
            self.route = "/readyz"
            self.answer_readiness()
        elif self.path == "/metrics":
            self.route = "/metrics"
            self.answer(200, self.server.render_metrics(), TEXT_METRICS)
        elif self.path == ROUTE_OPENAPI:
            self.route = ROUTE_OPENAPI
            self.answer(200, self.server.openapi)
        else:
            raise HTTPError(404)

    do_HEAD = do_GET

    def do_other(self):
        """Any method but GET and HEAD: 405 on a route, 404 elsewhere."""
        parts = self.path.split("/")
        if self.path in PLAIN_ROUTES:
            self.route = self.path
        elif parts[1:3] == ["api", "v1"] and len(parts) == 5 and parts[3] in API_ROUTES:
            self.route = API_ROUTES[parts[3]]
        elif parts[1:4] == ["api", "v1", "picture"] and len(parts) == 6 and parts[4] in PICTURE_ROUTES:
            self.route = PICTURE_ROUTES[parts[4]]
        else:
            raise HTTPError(404)
        raise HTTPError(405, extra=ALLOW)

    def authorize(self):
        token = self.server.tokens.token
        if token is None:
            # No token could be read: refuse the API rather than serve it unauthenticated.
            raise HTTPError(503, "Service Unavailable: no service token has been read yet")
        given = self.token_given
        if not given or not hmac.compare_digest(given, token):
            raise HTTPError(401, extra=BEARER_CHALLENGE)

    def answer_docs(self, docs: list[bytes]):
        if not docs:
            raise HTTPError(404)
        self.answer(200, b"[" + b",".join(docs) + b"]")

    def answer_image(self, doc: bytes | None):
        if doc is None:
            raise HTTPError(404)
        # The one route that must look inside a document: to decode the image.
        image = json.loads(doc)
        data = base64.b64decode(image["image"], validate=True)
        kind = str(image.get("type", "")).lower()
        content_type = f"image/{kind}".encode() if IMAGE_TYPE.fullmatch(kind) else b"application/octet-stream"
        self.answer(200, data, content_type)

    def answer_readiness(self):
        if self.server.tokens.token is None:
            raise HTTPError(503, "Service Unavailable: no service token has been read yet")
        self.server.store.ping()  # StoreUnavailable becomes 503 (StoreTimeout 504)
        self.answer(200, READY)

    # -- answer -------------------------------------------------------------
    def answer(self, status: int, body: bytes, content_type: bytes = JSON, extra: bytes = b""):
        """Make the whole answer, status line, headers and body, for one write."""
        self.status = status
        self.sent = len(body)
        if self.close_connection or self.server.draining:
            self.close_connection = True
            extra += b"Connection: close\r\n"
        elif self.keep_alive_10:
            extra += b"Connection: keep-alive\r\n"
        head = b"%sContent-Type: %s\r\nContent-Length: %d\r\n%s%s\r\n" % (
            STATUS_LINES[status], content_type, len(body), self.server.date_header, extra)
        self.reply = head if self.head else head + body

    def write_without_waiting(self):
        """Write what the socket takes now; a client slow to read gets the rest
        later, from sendall outside the turn, so it never holds the turn."""
        try:
            written = self.connection.send(self.reply, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        self.reply = self.reply[written:]

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
    """ThreadingHTTPServer with a deep listen backlog, a connection cap,
    header and idle timeouts, metrics, and a graceful drain."""

    daemon_threads = True

    def __init__(self, address, store: Store, tokens: TokenKeeper, options: argparse.Namespace,
                 reuse_port: bool = False):
        self.store = store
        self.tokens = tokens
        self.metrics = Metrics()
        self.access_log = options.access_log
        self.header_timeout = options.header_timeout
        self.idle_timeout = options.idle_timeout
        self.max_connections = options.max_connections
        self.request_queue_size = options.backlog  # the stdlib's 5 drops connections under load
        self.allow_reuse_port = reuse_port
        self.openapi = (HERE / "openapi.json").read_bytes()  # openapi.yaml as JSON, served as it is
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
        self.turn = Turn(patience=0.01) if store.serial else contextlib.nullcontext()
        self.date_header = b""
        self._stopped = threading.Event()
        self._last_store_log = 0.0
        self._tick()
        super().__init__(address, Handler)
        threading.Thread(target=self._watch, name="watchdog", daemon=True).start()

    def server_bind(self):
        # HTTPServer.server_bind resolves our own name (getfqdn), which can stall
        # start-up on a host without DNS; we never use that name.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address):
        if len(self.connections) >= self.max_connections:
            self.metrics.connection_rejected()
            try:
                request.setblocking(False)
                request.send(STATUS_LINES[503] + b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" % (len(TOO_MANY), TOO_MANY))
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
        log(f"error: connection from {client_address[0]}: {sys.exc_info()[1]!r}")

    # -- the watchdog -------------------------------------------------------
    def _tick(self):
        self.date_header = b"Date: %s\r\n" % email.utils.formatdate(usegmt=True).encode()

    def _watch(self):
        while not self._stopped.wait(0.25):
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
        return self.metrics.render(len(handlers), in_flight)

    def store_failed(self, kind: str, exc: Exception) -> None:
        self.metrics.store_error(kind)
        now = time.monotonic()
        if now - self._last_store_log >= 1.0:  # at most a line a second under a fault
            self._last_store_log = now
            log(f"store {kind}: {exc}")

    def log_access(self, method: str, route: str, status: int, seconds: float, size: int) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        sys.stdout.write(f"{stamp} method={method or '-'} route={route} status={status} "
                         f"ms={seconds * 1000:.3f} bytes={size}\n")


TOO_MANY = error_body("Service Unavailable: too many connections")


# -- start-up ---------------------------------------------------------------
def options(argv=None, environ=os.environ) -> argparse.Namespace:
    """Command-line flags over environment variables over defaults."""
    env = environ.get
    p = argparse.ArgumentParser(description="User-profile lookup service (see README.md).")
    p.add_argument("--host", default=env("SERVICE_HOST", "0.0.0.0"),  # nosec B104  # a container behind a load balancer
                   help="listen address [SERVICE_HOST]")
    p.add_argument("--port", type=int, default=env("SERVICE_PORT", "8080"), help="listen port [SERVICE_PORT]")
    p.add_argument("--workers", type=int, default=env("WORKERS", "1"),
                   help="processes sharing the port through SO_REUSEPORT [WORKERS]")
    p.add_argument("--token-refresh", type=float, default=env("TOKEN_REFRESH_SECONDS", "60"),
                   help="seconds between re-reads of the token [TOKEN_REFRESH_SECONDS]")
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction,
                   default=env("ACCESS_LOG", "true").lower() in ("1", "true", "yes", "on"),
                   help="one line per request on stdout [ACCESS_LOG]")
    p.add_argument("--header-timeout", type=float, default=env("HEADER_TIMEOUT_SECONDS", "10"),
                   help="seconds a client has to send a request's headers [HEADER_TIMEOUT_SECONDS]")
    p.add_argument("--idle-timeout", type=float, default=env("IDLE_TIMEOUT_SECONDS", "75"),
                   help="seconds an idle keep-alive connection is kept [IDLE_TIMEOUT_SECONDS]")
    p.add_argument("--max-connections", type=int, default=env("MAX_CONNECTIONS", "4096"),
                   help="open connections beyond which new ones get 503 [MAX_CONNECTIONS]")
    p.add_argument("--backlog", type=int, default=env("LISTEN_BACKLOG", "4096"),
                   help="listen queue length, capped by net.core.somaxconn [LISTEN_BACKLOG]")
    p.add_argument("--shutdown-grace", type=float, default=env("SHUTDOWN_GRACE_SECONDS", "20"),
                   help="seconds in-flight requests get to finish on SIGTERM [SHUTDOWN_GRACE_SECONDS]")
    args = p.parse_args(argv)
    for name in ("port", "workers", "max_connections", "backlog"):
        if getattr(args, name) < (0 if name == "port" else 1):
            p.error(f"--{name.replace('_', '-')} must be positive")
    return args


def raise_fd_limit() -> None:
    """Each connection is a file descriptor: allow as many as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(args: argparse.Namespace, reuse_port: bool = False) -> int:
    """Run one server process until SIGTERM or SIGINT; exit 0 after draining."""
    raise_fd_limit()
    if args.access_log:
        sys.stdout.reconfigure(line_buffering=True)
    store = open_store(os.environ)
    tokens = TokenKeeper(store, args.token_refresh)
    tokens.read()
    tokens.start()
    try:
        server = UserProfileServer((args.host, args.port), store, tokens, args, reuse_port=reuse_port)
    except OSError as exc:
        log(f"cannot listen on {args.host}:{args.port}: {exc}")
        return 1

    def stop(signum, frame):
        log(f"{signal.Signals(signum).name}: stop accepting, finish requests in flight")
        # shutdown() waits for serve_forever() to return, so it cannot run on this thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"serving on http://{args.host}:{server.server_port} (pid {os.getpid()}, "
        f"store: {store})")
    server.serve_forever(poll_interval=0.5)
    server.drain(args.shutdown_grace)
    tokens.stop()
    store.close()
    log("stopped")
    return 0


def serve_workers(args: argparse.Namespace) -> int:
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
                code = serve(args, reuse_port=True)
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
    for _ in range(args.workers):
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
    args = options(argv)
    return serve_workers(args) if args.workers > 1 else serve(args)


if __name__ == "__main__":
    sys.exit(main())
