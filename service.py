"""The answer to a request, without a socket: the routes, the token and the store call.

``Service.do_GET`` (``do_HEAD`` is the same) takes a parsed ``httpparse.Request`` and gives an
``Answer``: ``routes.match`` splits the path once, the token is checked in constant time,
one store call returns stored JSON as bytes, and every failure becomes its
status, never an exception. What caches may do with an answer, its ETag and
its gzip follow from its route (``routes.py``, ``negotiate.py``), with header
bytes built at start-up. ``TokenKeeper`` holds the bearer token, re-read from
the store so a rotated token takes effect without a restart. The connection
(``connection.py``) and the server (``server.py``) are built on top of these.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import json
import re
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple
from zlib import crc32

import negotiate
import routes
import settings
from httpparse import HTTPError, Request, decode_param
from logs import log
from metrics import Metrics
from negotiate import ETAG_LINE, TAG
from options import Options
from store import Store, StoreTimeout, StoreUnavailable

JSON = b"application/json"
TEXT_METRICS = b"text/plain; version=0.0.4; charset=utf-8"
HEALTHY = b'{"status":"ok"}'
READY = b'{"status":"ready"}'
# No token: the challenge alone; a wrong one says so (RFC 6750 3.1), so a client knows to get a new one.
BEARER_CHALLENGE = b'WWW-Authenticate: Bearer realm="userprofile"\r\n'
INVALID_TOKEN = b'WWW-Authenticate: Bearer realm="userprofile", error="invalid_token"\r\n'
ERROR_HEADERS = b"Cache-Control: %s\r\n" % routes.NO_STORE.encode()  # an error is of its moment
VARY = b"Vary: Accept-Encoding\r\n"  # on a route that compresses, both ways: caches keep them apart
GZIPPED = b"Content-Encoding: gzip\r\n"
IMAGE_TYPE = re.compile(r"[a-z0-9.+-]{1,32}")
NO_TOKEN_YET = "Service Unavailable: no service token has been read yet"
SHUTTING_DOWN = "Service Unavailable: shutting down"


def error_body(message: str) -> bytes:
    return json.dumps({"status": "failure", "message": {"error": message}}, separators=(",", ":")).encode()


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


Content = tuple[bytes, bytes]  # what a route's handler gives: the body of a 200 and its Content-Type


def refusal(err: HTTPError) -> Answer:
    return Answer(err.status, error_body(err.message), extra=ERROR_HEADERS + err.extra, close=err.close)


def route_headers(route: routes.Route, options: Options) -> bytes:
    """The header lines every 200 (and 304) of a route carries, as bytes once at start-up."""
    headers = b"Cache-Control: %s\r\n" % route.cache.format(**dataclasses.asdict(options)).encode()
    return headers + VARY if route.gzip else headers


class Service:
    """Requests in, answers out. No socket here, so a request can be answered in-process."""

    def __init__(
        self,
        store: Store,
        tokens: TokenKeeper,
        metrics: Metrics,
        openapi: bytes,
        render_metrics: Callable[[], bytes] | None = None,
        options: Options | None = None,
    ) -> None:
        options = options if options is not None else settings.defaults()
        self.store = store
        self.tokens = tokens
        self.metrics = metrics
        self.openapi = openapi
        self.render_metrics = render_metrics or (lambda: metrics.render(0, 0))
        self.handlers = {route: getattr(self, route.handler) for route in routes.ROUTES}
        # Per route, read once per answer: its header lines, whether it compresses, whether it has an ETag.
        self.shapes = {route: (route_headers(route, options), route.gzip, route.etag) for route in routes.ROUTES}
        self.compressed = {openapi: negotiate.compress(openapi)}  # the fixed bodies, gzipped once
        self.retry_after = b"Retry-After: %d\r\n" % options.retry_after
        # Set on SIGTERM: readiness fails at once, so load balancers stop sending new work,
        # and every answer from then on closes its connection (connection.py).
        self.draining = False
        self._last_store_log = 0.0

    def do_GET(self, request: Request) -> tuple[str, Answer]:
        """The route's name (for metrics and the access log) and the answer to one request: the
        one split of the path into its route and parameter (a table lookup: routes.py), the
        token, and the route's handler. Named as http.server's handlers are (``do_<METHOD>``)."""
        route, param = routes.match(request.path)
        name = route.name if route is not None else routes.NO_ROUTE
        try:
            if route is None:
                raise HTTPError(404)
            if route.needs_token:
                self.authorize(request.token)
            if param is None:
                body, content_type = self.handlers[route]()
            else:
                value = decode_param(param) if "%" in param else param  # no call for the usual id
                if not value:
                    raise HTTPError(404)
                body, content_type = self.handlers[route](value)
            return name, self.represent(route, request, body, content_type)
        except HTTPError as err:
            return name, refusal(err)
        except StoreTimeout as exc:
            self.store_failed("timeout", exc)
            return name, refusal(HTTPError(504))
        except StoreUnavailable as exc:
            self.store_failed("unavailable", exc)
            return name, refusal(self.unavailable())
        except Exception as exc:  # a bug of ours: answer 500, log one line, keep serving
            self.bug(name, exc)
            return name, refusal(HTTPError(500, close=True))

    do_HEAD = do_GET  # the same answer, whose body Conversation.reply leaves out

    def represent(self, route: routes.Route, request: Request, body: bytes, content_type: bytes) -> Answer:
        """A handler's 200 with its route's headers: gzip if the route and the client want it,
        then the ETag, and a 304 without a body if the client named it (after the token check)."""
        headers, compresses, tagged = self.shapes[route]
        coding = b""
        if compresses and negotiate.accepts_gzip(request.accept_encoding):
            body, coding = self.compressed.get(body) or negotiate.compress(body), GZIPPED
        if tagged:
            crc = crc32(body)
            headers += ETAG_LINE % crc
            if request.if_none_match is not None and negotiate.none_match(request.if_none_match, TAG % crc):
                # What a cache needs to refresh what it has, nothing about a body (RFC 9110 15.4.5).
                return Answer(304, b"", content_type, headers)
        return Answer(200, body, content_type, headers + coding if coding else headers)

    def unavailable(self, message: str | None = None) -> HTTPError:
        """A 503, with when to try again."""
        return HTTPError(503, message, extra=self.retry_after)

    def do_other(self, request: Request) -> tuple[str, Answer]:
        """Any other method: 501 for one the server does not know at all, else 405 on a route
        (with its Allow) and 404 elsewhere."""
        route, _ = routes.match(request.path)
        if request.method not in routes.KNOWN_METHODS:
            return route.name if route is not None else routes.NO_ROUTE, refusal(HTTPError(501))
        if route is None:
            return routes.NO_ROUTE, refusal(HTTPError(404))
        return route.name, refusal(HTTPError(405, extra=route.allow))

    def authorize(self, given: bytes | None) -> None:
        token = self.tokens.token
        if token is None:
            # No token could be read: refuse the API rather than serve it unauthenticated.
            raise self.unavailable(NO_TOKEN_YET)
        if not given:
            raise HTTPError(401, extra=BEARER_CHALLENGE)
        if not hmac.compare_digest(given, token):
            raise HTTPError(401, extra=INVALID_TOKEN)

    # -- the routes' handlers (routes.ROUTES names them) ----------------------
    def profile_by_id(self, record_id: str) -> Content:
        return document(self.store.get_profile(record_id))

    def profiles_by_nickname(self, nickname: str) -> Content:
        return documents(self.store.find_by_nickname(nickname))

    def profile_by_username(self, username: str) -> Content:
        return documents(self.store.find_by_username(username))

    def image_record(self, record_id: str) -> Content:
        return document(self.store.get_image(record_id))

    def image_raw(self, record_id: str) -> Content:
        doc = self.store.get_image(record_id)
        if doc is None:
            raise HTTPError(404)
        # The one route that must look inside a document: to decode the image.
        image = json.loads(doc)
        data = base64.b64decode(image["image"], validate=True)
        kind = str(image.get("type", "")).lower()
        content_type = f"image/{kind}".encode() if IMAGE_TYPE.fullmatch(kind) else b"application/octet-stream"
        return data, content_type

    def liveness(self) -> Content:
        return HEALTHY, JSON

    def readiness(self) -> Content:
        if self.draining:
            raise self.unavailable(SHUTTING_DOWN)
        if self.tokens.token is None:
            raise self.unavailable(NO_TOKEN_YET)
        self.store.ping()  # StoreUnavailable becomes 503 (StoreTimeout 504)
        return READY, JSON

    def exposition(self) -> Content:
        return self.render_metrics(), TEXT_METRICS

    def openapi_json(self) -> Content:
        return self.openapi, JSON

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


def documents(docs: list[bytes]) -> Content:
    """Stored JSON documents as a JSON array, never decoded: 404 when there are none."""
    if not docs:
        raise HTTPError(404)
    return b"[" + b",".join(docs) + b"]", JSON


def document(doc: bytes | None) -> Content:
    """One stored JSON document as a JSON array of one, never decoded: 404 when there is none."""
    if doc is None:
        raise HTTPError(404)
    return b"[" + doc + b"]", JSON


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
            self._report(
                f"token: cannot read service_auth:1 from the store ({exc})"
                + ("; the API answers 503 until it can" if self.token is None else "; keeping the token read before")
            )
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
