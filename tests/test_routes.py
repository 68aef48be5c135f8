"""routes: the table and how a path finds its route, alone (no server).
test_openapi.py keeps the table and openapi.yaml in agreement."""

from __future__ import annotations

import pytest

import routes
from service import Service

pytestmark = pytest.mark.inprocess


@pytest.mark.parametrize(
    "path, shape, param",
    [
        ("/api/v1/id/42", "/api/v1/id/{id}", "42"),
        ("/api/v1/nickname/Zo%C3%AB", "/api/v1/nickname/{nickname}", "Zo%C3%AB"),
        ("/api/v1/username/jsmith", "/api/v1/username/{username}", "jsmith"),
        ("/api/v1/picture/record/1", "/api/v1/picture/record/{id}", "1"),
        ("/api/v1/picture/raw/1", "/api/v1/picture/raw/{id}", "1"),
        ("/api/v1/id/", "/api/v1/id/{id}", ""),  # an empty parameter: the handler says 404
        ("/healthz", "/healthz", None),
        ("/api/v1/openapi.json", "/api/v1/openapi.json", None),
    ],
)
def test_a_path_finds_its_route_and_parameter(path, shape, param):
    for method in ("GET", "HEAD"):
        route, found = routes.match(method, path)
        assert route.shape == shape and found == param


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "",
        "/api/v1/id",
        "/api/v1/id/1/2",
        "/api/v1/picture/1",
        "/healthz/",
        "/api/v1/other/1",
        "/API/v1/id/1",
        "/metrics/x",
    ],
)
def test_a_path_of_no_route(path):
    with pytest.raises(routes.NoMatch) as miss:
        routes.match("GET", path)
    assert (miss.value.status, miss.value.name, miss.value.allow) == (404, routes.NO_ROUTE, b"")


@pytest.mark.parametrize(
    "method, path, status, name, allow",
    [
        ("POST", "/api/v1/id/1", 405, "/api/v1/id", b"Allow: GET, HEAD\r\n"),
        ("QUERY", "/healthz", 405, "/healthz", b"Allow: GET, HEAD\r\n"),
        ("BREW", "/api/v1/id/1", 501, "/api/v1/id", b""),  # a method no server knows: 501 (RFC 9110 15.6.2)
        ("BREW", "/nowhere", 501, routes.NO_ROUTE, b""),
        ("DELETE", "/nowhere", 404, routes.NO_ROUTE, b""),
    ],
)
def test_a_method_a_route_does_not_answer(method, path, status, name, allow):
    with pytest.raises(routes.NoMatch) as miss:
        routes.match(method, path)
    assert (miss.value.status, miss.value.name, miss.value.allow) == (status, name, allow)


def test_head_is_answered_wherever_get_is():
    assert routes.Route("/x", "x", needs_token=False, cache=routes.NO_STORE).methods == ("GET", "HEAD")
    assert routes.Route("/x", "x", needs_token=False, cache=routes.NO_STORE, methods=("POST",)).methods == ("POST",)


def test_names_are_the_shapes_without_their_parameter_and_unique():
    assert [r.name for r in routes.ROUTES] == [
        "/api/v1/id",
        "/api/v1/nickname",
        "/api/v1/username",
        "/api/v1/picture/record",
        "/api/v1/picture/raw",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
    ]
    assert routes.NO_ROUTE not in {r.name for r in routes.ROUTES}


def test_every_route_has_its_handler_and_allow_header():
    for route in routes.ROUTES:
        assert callable(getattr(Service, route.handler)), route
        assert route.allow == b"Allow: GET, HEAD\r\n"
