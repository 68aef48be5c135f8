"""The route table: every path the service answers, declared once.

Each route has its path shape (as in openapi.yaml), the name of the
``Service`` method that answers it, whether it needs the token, and the
methods it answers. Its name, the ``route`` label of metrics and access logs,
is the shape without its parameter (never the parameter's value). 404, 405
and ``Allow`` follow from the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, eq=False)  # eq=False: hashed by identity, cheap as a dict key
class Route:
    shape: str  # "/api/v1/id/{id}": a fixed path, or a prefix and one parameter as its last segment
    handler: str
    needs_token: bool
    methods: tuple[str, ...] = ("GET", "HEAD")
    name: str = field(init=False)  # the shape without its parameter
    allow: bytes = field(init=False)  # the Allow header line of a 405

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.shape.rpartition("/")[0] if self.shape.endswith("}") else self.shape)
        object.__setattr__(self, "allow", b"Allow: %s\r\n" % ", ".join(self.methods).encode())


ROUTES = (
    Route("/api/v1/id/{id}", "profile_by_id", needs_token=True),
    Route("/api/v1/nickname/{nickname}", "profiles_by_nickname", needs_token=True),
    Route("/api/v1/username/{username}", "profile_by_username", needs_token=True),
    Route("/api/v1/picture/record/{id}", "image_record", needs_token=True),
    Route("/api/v1/picture/raw/{id}", "image_raw", needs_token=True),
    Route("/healthz", "liveness", needs_token=False),
    Route("/readyz", "readiness", needs_token=False),
    Route("/metrics", "exposition", needs_token=False),
    Route("/api/v1/openapi.json", "openapi_json", needs_token=False),
)
NO_ROUTE = "other"  # the name a request for no route is counted under


FIXED = {r.shape: r for r in ROUTES if not r.shape.endswith("}")}
WITH_PARAM = {r.name: r for r in ROUTES if r.shape.endswith("}")}  # by the path before the parameter


def match(path: str) -> tuple[Route | None, str | None]:
    """The route of a path and its parameter, still percent-encoded: (None, None) for no route.

    A parameter is one segment: "/api/v1/id/1/2" has no route, "/api/v1/id/" an empty parameter.
    """
    route = FIXED.get(path)
    if route is not None:
        return route, None
    prefix, _, param = path.rpartition("/")
    route = WITH_PARAM.get(prefix)
    return (route, param) if route is not None else (None, None)
