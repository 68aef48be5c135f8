"""The route table: every path the service answers, declared once.

Each route has its path shape (as in openapi.yaml), the name of the
``Service`` method that answers it, whether it needs the token, the methods it
answers (HEAD wherever GET), what caches may do with its answers (``Cache-Control``),
whether it is worth compressing, and whether it answers a page of its matches. Its
name, the ``route`` label of metrics and access logs, is the shape without its
parameter (never the parameter's value). ``match`` is the one dispatch: a request's
route and parameter, or ``NoMatch`` with its status (404; 405 and ``Allow``; 501 for
a method the server does not know). The ``ETag`` follows from the table too: every 200
of an ``/api/v1/`` route has one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# What caches may do with an answer (RFC 9111 5.2.2). A profile is one user's data, fetched
# with a token that may come in x-access-token, which a shared cache does not know to protect:
# "private" keeps it out of shared caches, "no-cache" lets the client keep it but ask again
# each time, which the ETag makes a 304 without a body (no-store would forbid even that).
REVALIDATE = "private, no-cache"
PICTURE = "private, max-age={picture_max_age}"  # pictures change rarely: N from the settings
NO_STORE = "no-store"  # a state of the moment (health, metrics), or an error
PUBLIC_REVALIDATE = "no-cache"  # the same for everyone, but new with each release


@dataclass(frozen=True, eq=False)  # eq=False: hashed by identity, cheap as a dict key
class Route:
    shape: str  # "/api/v1/id/{id}": a fixed path, or a prefix and one parameter as its last segment
    handler: str
    needs_token: bool
    cache: str  # the Cache-Control of its answers but errors; {setting} names a setting's value
    gzip: bool = False  # gzip when the client accepts it: large text (never images or small JSON)
    paged: bool = False  # answers a page of its matches (?limit=&cursor=, a Link to the next page)
    methods: tuple[str, ...] = ("GET",)  # HEAD is added wherever GET is (RFC 9110 9.3.2)
    name: str = field(init=False)  # the shape without its parameter
    allow: bytes = field(init=False)  # the Allow header line of a 405
    etag: bool = field(init=False)  # its 200s carry a strong ETag, and If-None-Match may get a 304

    def __post_init__(self) -> None:
        if "GET" in self.methods and "HEAD" not in self.methods:
            object.__setattr__(self, "methods", (*self.methods, "HEAD"))
        object.__setattr__(self, "name", self.shape.rpartition("/")[0] if self.shape.endswith("}") else self.shape)
        object.__setattr__(self, "allow", b"Allow: %s\r\n" % ", ".join(self.methods).encode())
        object.__setattr__(self, "etag", self.shape.startswith("/api/v1/"))


ROUTES = (
    Route("/api/v1/id/{id}", "profile_by_id", needs_token=True, cache=REVALIDATE),
    Route("/api/v1/nickname/{nickname}", "profiles_by_nickname", needs_token=True, cache=REVALIDATE, paged=True),
    Route("/api/v1/username/{username}", "profiles_by_username", needs_token=True, cache=REVALIDATE, paged=True),
    Route("/api/v1/picture/record/{id}", "image_record", needs_token=True, cache=PICTURE),
    Route("/api/v1/picture/raw/{id}", "image_raw", needs_token=True, cache=PICTURE),
    Route("/healthz", "liveness", needs_token=False, cache=NO_STORE),
    Route("/readyz", "readiness", needs_token=False, cache=NO_STORE),
    Route("/metrics", "exposition", needs_token=False, cache=NO_STORE, gzip=True),
    Route("/api/v1/openapi.json", "openapi_json", needs_token=False, cache=PUBLIC_REVALIDATE, gzip=True),
)
# Methods of RFC 9110 9, PATCH (RFC 5789) and QUERY (the safe method with a body): a route
# that does not answer one says 405 and Allow; a method the server does not know at all gets
# 501 (RFC 9110 15.6.2).
KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"))
NO_ROUTE = "other"  # the name a request for no route is counted under


FIXED = {r.shape: r for r in ROUTES if not r.shape.endswith("}")}
WITH_PARAM = {r.name: r for r in ROUTES if r.shape.endswith("}")}  # by the path before the parameter


class NoMatch(Exception):
    """No route answers this request: its status, the name it is counted under, and for a 405
    the route's ``Allow`` line."""

    def __init__(self, status: int, name: str = NO_ROUTE, allow: bytes = b"") -> None:
        super().__init__(status)
        self.status = status
        self.name = name
        self.allow = allow


def match(method: str, path: str) -> tuple[Route, str | None]:
    """The route of a request and its parameter, still percent-encoded (None for a fixed path);
    ``NoMatch`` when none answers it: 501 for a method the server does not know at all, else
    404 for a path of no route, or 405 with the route's ``Allow`` (RFC 9110 15.5.6, 15.6.2).

    A parameter is one segment: "/api/v1/id/1/2" has no route, "/api/v1/id/" an empty parameter
    (the handler's 404, after the token check).
    """
    route = FIXED.get(path)
    param = None
    if route is None:
        prefix, _, param = path.rpartition("/")
        route = WITH_PARAM.get(prefix)
        if route is None:
            raise NoMatch(404 if method in KNOWN_METHODS else 501)
    if method not in route.methods:
        if method in KNOWN_METHODS:
            raise NoMatch(405, route.name, route.allow)
        raise NoMatch(501, route.name)
    return route, param
