"""The answer to a request, without a socket: the routes, the caller and the store call.

``Service.do_GET`` takes a parsed ``httpparse.Request`` of any method and gives an ``Answer``
(answers.py): ``routes.match`` finds the route once (or says 404, 405 or 501), the caller is
checked (``auth.Gate``: the token in constant time, or a JWT access token, cached once
verified), one store call returns stored JSON as bytes, and every failure becomes its status,
never an exception. What caches may do with an answer, its ETag and its gzip follow from its
route (``routes.py``, ``negotiate.py``), with header bytes built at start-up. Whether the server
is draining is the server's to say (``Drain``). ``TokenKeeper`` holds the bearer token, re-read
from the store so a rotated token takes effect without a restart. The connection
(``connection.py``) and the server (``server.py``) are built on top of these.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote, unquote
from zlib import crc32

import auth
import negotiate
import routes
import settings
from answers import JSON, Answer, HTTPError, refusal, unavailable
from httpparse import Request, decode_param
from logs import log, masked
from metrics import Metrics
from negotiate import ETAG_LINE, TAG
from options import Options
from store import FIRST_PAGE, MAX_RECORD_ID, Page, Store, StoreTimeout, StoreUnavailable

if TYPE_CHECKING:
    from accesstoken import Verifier

TEXT_METRICS = b"text/plain; version=0.0.4; charset=utf-8"
HEALTHY = b'{"status":"ok"}'
READY = b'{"status":"ready"}'
VARY = b"Vary: Accept-Encoding\r\n"  # on a route that compresses, both ways: caches keep them apart
GZIPPED = b"Content-Encoding: gzip\r\n"
IMAGE_TYPE = re.compile(r"[a-z0-9.+-]{1,32}")
# An image's type from its first bytes, so a browser can show it whatever its document's label
# says (the blog's data labels JPEG 2000 "jpeg"): (signature, offset, Content-Type).
IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", 0, b"image/png"),
    (b"\xff\xd8\xff", 0, b"image/jpeg"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", 0, b"image/jp2"),  # the JPEG 2000 file format (RFC 3745)
    (b"\xff\x4f\xff\x51", 0, b"image/j2c"),  # a bare JPEG 2000 codestream
    (b"GIF87a", 0, b"image/gif"),
    (b"GIF89a", 0, b"image/gif"),
    (b"WEBP", 8, b"image/webp"),  # after "RIFF" and the length
)
# A page's query string: ?limit=N&cursor=C, nothing else read (RFC 3986's query, unparsed till here).
LIMIT = re.compile(r"[0-9]{1,9}")
CURSOR = re.compile(r"-?[0-9]{1,16}")
SHUTTING_DOWN = "Service Unavailable: shutting down"


def where(exc: BaseException) -> str:
    """The frames of an exception as one line: file:line in function, outermost first."""
    frames = traceback.extract_tb(exc.__traceback__)
    return " > ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames)


Content = tuple[bytes, bytes]  # what a route's handler gives: the body of a 200 and its Content-Type


class Drain(Protocol):
    """Whether the server is draining (``server.Connections`` says): set on SIGTERM, after which
    readiness fails, so load balancers stop sending new work, and every answer closes its
    connection (connection.py)."""

    @property
    def draining(self) -> bool: ...


@dataclass
class Serving:
    """The drain of a service outside a server (tests, bench): never, unless a test sets it."""

    draining: bool = False


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
        options: Options | None = None,
        verifier: Verifier | None = None,
        drain: Drain | None = None,
    ) -> None:
        options = options if options is not None else settings.defaults()
        self.store = store
        self.tokens = tokens
        self.metrics = metrics
        self.openapi = openapi
        # With METRICS_PORT, /metrics is answered there alone (metricsport.py), and here is no route.
        self.metrics_elsewhere = options.metrics_port is not None
        self.handlers = {route: getattr(self, route.handler) for route in routes.ROUTES}
        # Per route, read once per answer: its header lines, whether it compresses, whether it has an ETag.
        self.shapes = {route: (route_headers(route, options), route.gzip, route.etag) for route in routes.ROUTES}
        self.compressed = {openapi: negotiate.compress(openapi)}  # the fixed bodies, gzipped once
        self.retry_after = options.retry_after
        self.page_size, self.max_page_size = options.page_size, max(options.page_size, options.max_page_size)
        self.drain: Drain = drain if drain is not None else Serving()
        self._last_store_log = 0.0
        # Who may call (AUTH_MODE): a check chosen once, called before every /api/v1/ lookup.
        self.gate = auth.Gate(
            options.auth_mode, tokens, verifier, metrics, self.unavailable, options.auth_scope, options.auth_cache_size
        )
        self.authorize = self.gate.check

    def do_GET(self, request: Request) -> tuple[str, Answer]:
        """The route's name (for metrics and the access log) and the answer to one request of
        any method: the one split of the path into its route and parameter, with the method
        checked (a table lookup: routes.match), the token, and the route's handler. Named as
        http.server's handlers are (``do_<METHOD>``); HEAD's answer is GET's, whose body
        Conversation.reply leaves out, and the route table says which methods a route answers."""
        try:
            route, param = routes.match(request.method, request.path)
        except routes.NoMatch as miss:
            return miss.name, refusal(HTTPError(miss.status, extra=miss.allow))
        name = route.name
        try:
            if route.needs_token:
                self.authorize(request)
            extra = b""
            if param is None:
                body, content_type = self.handlers[route]()
            else:
                value = decode_param(param) if "%" in param else param  # no call for the usual id
                if not value:
                    raise HTTPError(404)
                if route.paged:
                    body, content_type, extra = self.page(route, value, request.query)
                else:
                    body, content_type = self.handlers[route](value)
            return name, self.represent(route, request, body, content_type, extra)
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

    def represent(
        self, route: routes.Route, request: Request, body: bytes, content_type: bytes, extra: bytes = b""
    ) -> Answer:
        """A handler's 200 with its route's headers (and the handler's ``extra`` lines): gzip if the
        route and the client want it, then the ETag, and a 304 without a body if the client named it
        (after the token check). The ETag covers the extra lines too: a page whose profiles are the
        same but whose link to a next page is new is another representation."""
        headers, compresses, tagged = self.shapes[route]
        if extra:
            headers += extra
        coding = b""
        if compresses and negotiate.accepts_gzip(request.accept_encoding):
            body, coding = self.compressed.get(body) or negotiate.compress(body), GZIPPED
        if tagged:
            crc = crc32(extra, crc32(body)) if extra else crc32(body)
            headers += ETAG_LINE % crc
            if request.if_none_match is not None and negotiate.none_match(request.if_none_match, TAG % crc):
                # What a cache needs to refresh what it has, nothing about a body (RFC 9110 15.4.5).
                return Answer(304, b"", content_type, headers)
        return Answer(200, body, content_type, headers + coding if coding else headers)

    def unavailable(self, message: str | None = None) -> HTTPError:
        """A 503, with when to try again."""
        return unavailable(self.retry_after, message)

    # -- the routes' handlers (routes.ROUTES names them) ----------------------
    def profile_by_id(self, record_id: str) -> Content:
        return document(self.store.get_profile(record_id))

    def profiles_by_nickname(self, nickname: str, after: int, limit: int) -> Page:
        return self.store.find_by_nickname(nickname, after, limit)

    def profiles_by_username(self, username: str, after: int, limit: int) -> Page:
        return self.store.find_by_username(username, after, limit)

    def image_record(self, record_id: str) -> Content:
        return document(self.store.get_image(record_id))

    def image_raw(self, record_id: str) -> Content:
        doc = self.store.get_image(record_id)
        if doc is None:
            raise HTTPError(404)
        # The one route that must look inside a document: to decode the image.
        image = json.loads(doc)
        data = base64.b64decode(image["image"], validate=True)
        for signature, offset, content_type in IMAGE_SIGNATURES:
            if data.startswith(signature, offset):
                return data, content_type
        # Bytes of no type known here: what the document says they are.
        kind = str(image.get("type", "")).lower()
        return data, f"image/{kind}".encode() if IMAGE_TYPE.fullmatch(kind) else b"application/octet-stream"

    def page(self, route: routes.Route, value: str, query: str) -> tuple[bytes, bytes, bytes]:
        """A paged route's answer: the page the query string asks for (``page_request``), its
        profiles as a JSON array (404 when there are none), and a ``Link`` to the next page when
        there is one (RFC 8288): the same path, the same limit, the cursor after this page."""
        limit, after = (
            page_request(query, self.page_size, self.max_page_size) if query else (self.page_size, FIRST_PAGE)
        )
        docs, next_after = self.handlers[route](value, after, limit)
        body, content_type = documents(docs)
        if next_after is None:
            return body, content_type, b""
        target = f"{route.name}/{quote(value, safe='')}?limit={limit}&cursor={next_after}"
        return body, content_type, b'Link: <%s>; rel="next"\r\n' % target.encode()

    def liveness(self) -> Content:
        return HEALTHY, JSON

    def readiness(self) -> Content:
        """200, or a 503 whose message names the cause in the words of its log line (an operator
        reads it in ``kubectl describe pod``): draining, the store's own (DNS, TLS, authentication,
        timeout: what its background thread last found, so this waits for nothing), the token's."""
        if self.drain.draining:
            raise self.unavailable(SHUTTING_DOWN)
        try:
            self.store.ping()
        except StoreUnavailable as exc:
            self.store_failed("unavailable", exc)
            raise self.unavailable(f"Service Unavailable: {exc}") from None
        problem = self.gate.not_ready()
        if problem is not None:
            raise self.unavailable(problem)
        return READY, JSON

    def exposition(self) -> Content:
        if self.metrics_elsewhere:
            raise HTTPError(404)
        return self.metrics.render(), TEXT_METRICS

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
            line = masked(line, token.decode(errors="replace"))
        log(line)


def page_request(query: str, default: int, maximum: int) -> tuple[int, int]:
    """The page a query string asks for: (limit, the record_id it starts after). ``limit`` is
    1..maximum (``default`` when absent), ``cursor`` one a ``Link`` gave; each at most once, and
    other parameters ignored. HTTPError 400 otherwise."""
    limit: int | None = None
    after: int | None = None
    for parameter in query.split("&"):
        name, _, value = parameter.partition("=")
        if "%" in parameter:  # "%31" is "1" (RFC 3986 6.2.2.2)
            name, value = unquote(name), unquote(value)
        if name == "limit":
            if limit is not None or not LIMIT.fullmatch(value) or not 1 <= int(value) <= maximum:
                raise HTTPError(400, f"limit must be given once, an integer from 1 to {maximum}")
            limit = int(value)
        elif name == "cursor":
            if after is not None or not CURSOR.fullmatch(value) or not -MAX_RECORD_ID < int(value) < MAX_RECORD_ID:
                raise HTTPError(400, "cursor must be given once, as a Link to the next page gives it")
            after = int(value)
    return (limit if limit is not None else default), (after if after is not None else FIRST_PAGE)


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
    """The bearer token from ``<auth collection>:1``: read at start-up, then re-read
    every ``refresh`` seconds so a rotated token takes effect without a restart."""

    def __init__(self, store: Store, refresh: float):
        self.store = store
        self.refresh = refresh
        self.token: bytes | None = None
        self.problem: str | None = None  # why no token is in force, as logged
        self._stop = threading.Event()

    def read(self) -> None:
        try:
            value = self.store.read_token()
        except StoreUnavailable as exc:
            self._report(
                f"token: cannot read {self.store.layout.token_key} from the store ({exc})"
                + ("; the API answers 503 until it can" if self.token is None else "; keeping the token read before")
            )
            return
        if not value:
            self.token = None
            self._report(f"token: {self.store.layout.token_key} has no token; the API answers 503 (run loaddata.py)")
            return
        token = value.encode()
        if self.token is not None and token != self.token:
            log("token: a rotated token was read and is now in force")
        elif self.token is None:
            log(f"token: read from {self.store.layout.token_key}")
        self.token = token
        self.problem = None

    def _report(self, problem: str) -> None:
        if problem != self.problem:  # say it once, not at every retry
            log(problem)
            self.problem = problem

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
