"""The service without a socket: a request in, an answer out, and what a bug in the code
below it leaves in the log (the routes and the store's faults: test_hostile.py's corpus)."""

from __future__ import annotations

import inspect
import io
import json
import re
from pathlib import Path

import pytest
from conftest import TOKEN

import httpparse
import settings
from metrics import Metrics
from service import Service, Serving, TokenKeeper
from store import Store, StoreUnavailable
from testkit import EmptyStore

pytestmark = pytest.mark.inprocess


class BrokenStore(EmptyStore):
    """A store with a bug of its own: what a 500 is for. Its message holds the token."""

    def get_profile(self, record_id: str) -> bytes | None:
        raise KeyError(f"no column for {record_id} near {TOKEN}")


def test_the_stand_ins_are_stores():
    assert isinstance(EmptyStore(), Store) and isinstance(BrokenStore(), Store)


def raise_site() -> str:
    """Where BrokenStore raises, as a log line names a frame: file:line in function."""
    lines, first = inspect.getsourcelines(BrokenStore.get_profile)
    offset = next(i for i, line in enumerate(lines) if "raise " in line)
    return f"{Path(__file__).name}:{first + offset} in get_profile"


def test_a_bug_is_a_500_logged_on_one_line_with_where_it_was_raised_and_never_the_token(capsys):
    tokens = TokenKeeper(BrokenStore(), refresh=60)
    tokens.token = TOKEN.encode()
    service = Service(BrokenStore(), tokens, Metrics(), b"{}")
    request = httpparse.read_request(
        io.BytesIO(f"GET /api/v1/id/5 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()),
        settings.defaults(),
    )
    route, answer = service.do_GET(request)
    assert (route, answer.status, answer.close) == ("/api/v1/id", 500, True)
    assert json.loads(answer.body) == {"status": "failure", "message": {"error": "Internal Server Error"}}
    [line] = capsys.readouterr().err.splitlines()
    # The exception's type and message (the token masked), then its frames outermost first, so the
    # last is where it was raised, then the route. The frames above it are the service's own,
    # whatever their names.
    frames = r"(?:[\w.]+:\d+ in [\w<>]+ > )+"
    assert re.search(
        rf" error: KeyError: .*no column for 5 near \*\*\*.* at {frames}{re.escape(raise_site())}"
        r" \(route /api/v1/id\)$",
        line,
    ), line
    assert TOKEN not in line and TOKEN[:-1] not in line


WHY = "connecting to couchbases://cb.x (bucket b) failed: DNS: no answer for _couchbases._tcp.cb.x SRV"


class NotConnected(EmptyStore):
    """A store whose background thread found why it cannot connect: its ping says so at once."""

    def ping(self) -> None:
        raise StoreUnavailable(f"couchbase: not connected: {WHY}")


def readyz(service: Service) -> tuple[int, str]:
    request = httpparse.read_request(io.BytesIO(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"), settings.defaults())
    _, answer = service.do_GET(request)
    return answer.status, json.loads(answer.body)["message"]["error"] if answer.status != 200 else "ready"


def test_readyz_names_the_cause_draining_then_the_store_then_the_token():
    """A 503's JSON body says why, in the words of the log line that said it first: the store's
    cause before the token's (a token not read because the store is not connected is the store's)."""
    tokens = TokenKeeper(NotConnected(), refresh=60)
    drain = Serving()
    service = Service(NotConnected(), tokens, Metrics(), b"{}", drain=drain)
    assert readyz(service) == (503, f"Service Unavailable: couchbase: not connected: {WHY}")
    drain.draining = True  # as server.Connections says after SIGTERM
    assert readyz(service) == (503, "Service Unavailable: shutting down")
    service = Service(EmptyStore(), tokens, Metrics(), b"{}")
    assert readyz(service) == (503, "Service Unavailable: no service token has been read yet")
    tokens.read()  # the empty store holds no token: why, logged and kept
    assert readyz(service) == (
        503,
        "Service Unavailable: token: service_auth:1 has no token; the API answers 503 (run loaddata.py)",
    )
    tokens.token = TOKEN.encode()
    assert readyz(service) == (200, "ready")
