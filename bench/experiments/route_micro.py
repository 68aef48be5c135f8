#!/usr/bin/env python3
"""The route of a path: the table lookup (routes.match) against an if/elif chain on the split segments.

    .venv/bin/python bench/experiments/route_micro.py [--number 200000] [--repeat 7]

The plain way to route in a do_GET is to split the path once and run an if/elif chain on the
segments. The service looks the path up in routes.ROUTES instead (a dict for the fixed paths, one rpartition and a dict
for the rest). This times both on the same paths, in this process, each the best of --repeat runs
of --number calls of a GET, in ns per call; the chain answers exactly what routes.match answers
(checked first: the route and parameter, or NoMatch with its status), so only the speed differs.
The chain's method check is one call more than the table's.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import routes

BY_SHAPE = {r.shape: r for r in routes.ROUTES}
ID, NICKNAME, USERNAME = (
    BY_SHAPE["/api/v1/id/{id}"],
    BY_SHAPE["/api/v1/nickname/{nickname}"],
    BY_SHAPE["/api/v1/username/{username}"],
)
RECORD, RAW = BY_SHAPE["/api/v1/picture/record/{id}"], BY_SHAPE["/api/v1/picture/raw/{id}"]
HEALTHZ, READYZ, METRICS = BY_SHAPE["/healthz"], BY_SHAPE["/readyz"], BY_SHAPE["/metrics"]
OPENAPI = BY_SHAPE["/api/v1/openapi.json"]
NONE = (None, None)


def chain(method: str, path: str) -> tuple[routes.Route, str | None]:
    """routes.match's answer by the chain: the route found, then its method checked as the table does."""
    route, param = split(path)
    if route is None:
        raise routes.NoMatch(404 if method in routes.KNOWN_METHODS else 501)
    if method not in route.methods:
        if method in routes.KNOWN_METHODS:
            raise routes.NoMatch(405, route.name, route.allow)
        raise routes.NoMatch(501, route.name)
    return route, param


def split(path: str) -> tuple[routes.Route | None, str | None]:
    """One split, then an if/elif chain on the segments."""
    parts = path.split("/")
    n = len(parts)
    if n == 5 and parts[1] == "api" and parts[2] == "v1":
        kind = parts[3]
        if kind == "id":
            return ID, parts[4]
        elif kind == "nickname":
            return NICKNAME, parts[4]
        elif kind == "username":
            return USERNAME, parts[4]
        return NONE
    elif n == 6 and parts[1] == "api" and parts[2] == "v1" and parts[3] == "picture":
        kind = parts[4]
        if kind == "record":
            return RECORD, parts[5]
        elif kind == "raw":
            return RAW, parts[5]
        return NONE
    elif n == 2:
        name = parts[1]
        if name == "healthz":  # noqa: SIM116  # the if/elif chain is what this times against the table
            return HEALTHZ, None
        elif name == "readyz":
            return READYZ, None
        elif name == "metrics":
            return METRICS, None
        return NONE
    elif n == 4 and path == "/api/v1/openapi.json":
        return OPENAPI, None
    return NONE


PATHS = {
    "id": "/api/v1/id/4711",
    "nickname": "/api/v1/nickname/swiftFox",
    "picture/raw": "/api/v1/picture/raw/4711",
    "healthz": "/healthz",
    "metrics": "/metrics",
    "openapi.json": "/api/v1/openapi.json",
    "no route": "/api/v1/nothing/here/at/all",
}
CHECKED = [
    *PATHS.values(),
    "/",
    "",
    "/api/v1/id/",
    "/api/v1/id/1/2",
    "/api/v2/id/1",
    "/healthz/",
    "/api/v1/picture/x/1",
    "/api/v1/picture/raw",
    "/api/v1/openapi.json/x",
    "/api/v1/id",
]


def outcome(fn: Callable[[str, str], tuple], method: str, path: str) -> tuple:
    """What a router answers: (route, parameter), or NoMatch's status, name and Allow."""
    try:
        return fn(method, path)
    except routes.NoMatch as miss:
        return miss.status, miss.name, miss.allow


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--number", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()
    for path in CHECKED:
        for method in ("GET", "HEAD", "POST", "BREW"):
            assert outcome(chain, method, path) == outcome(routes.match, method, path), (method, path)
    print(f"{'path':<14} {'table ns':>9} {'chain ns':>9}  chain/table")
    for label, path in PATHS.items():
        ns = {}
        for name, fn in (("table", routes.match), ("chain", chain)):
            best = min(
                timeit.repeat(
                    "try:\n    fn('GET', path)\nexcept NoMatch:\n    pass",
                    globals={"fn": fn, "path": path, "NoMatch": routes.NoMatch},
                    number=args.number,
                    repeat=args.repeat,
                )
            )
            ns[name] = best / args.number * 1e9
        print(f"{label:<14} {ns['table']:>9.0f} {ns['chain']:>9.0f}  {ns['chain'] / ns['table']:.2f}")


if __name__ == "__main__":
    main()
