"""service: requests answered in-process, without a socket (the whole API over sockets is
tests/test_userprofile_service.py; the hostile corpus is tests/test_hostile.py)."""

from __future__ import annotations

import io
import json
import re

from conftest import TOKEN

import httpparse
import settings
from metrics import Metrics
from service import Service, TokenKeeper


class BrokenStore:
    """A store with a bug of its own: what a 500 is for."""

    serial = False

    def get_profile(self, record_id):
        raise KeyError(f"no column for {record_id} near {TOKEN}")


def test_a_bug_is_a_500_logged_on_one_line_with_its_frames_and_never_the_token(capsys):
    tokens = TokenKeeper(BrokenStore(), refresh=60)
    tokens.token = TOKEN.encode()
    service = Service(BrokenStore(), tokens, Metrics(), b"{}")
    request = httpparse.read_request(io.BytesIO(
        f"GET /api/v1/id/5 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()),
        settings.defaults())
    route, answer = service.respond(request)
    assert (route, answer.status, answer.close) == ("/api/v1/id", 500, True)
    assert json.loads(answer.body) == {"status": "failure", "message": {"error": "Internal Server Error"}}
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert re.search(r" error: KeyError: .*no column for 5 near \*\*\*' at service\.py:\d+ in respond"
                     r" > service\.py:\d+ in profile_by_id > test_service\.py:\d+ in "
                     r"get_profile \(route /api/v1/id\)$", lines[0]), lines[0]
    assert TOKEN not in lines[0]
