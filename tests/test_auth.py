"""auth.py: the modes, the verified-token cache, the refusals and their counts, the start-up
checks of the AUTH_* settings, and caller= in the access log; in-process, with keys the tests
make themselves."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time

import pytest

import auth
import settings
import userprofile_service
from accesstoken import Verifier
from answers import HTTPError
from connection import Conversation, Site
from httpparse import Request
from metrics import Metrics
from service import Service, TokenKeeper
from testkit import ROOT, BytesWriter, EmptyStore
from testkit.issuer import AUDIENCE, SigningKey, claims, verifier_holding

pytestmark = pytest.mark.inprocess

ISSUER = "https://idp.example"
STATIC = b"static-token-0123456789"


class Tokens:
    def __init__(self, token: bytes | None = STATIC) -> None:
        self.token = token
        self.problem: str | None = None


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey("ES256")


def verifier_of(key: SigningKey, fetched: bool = True) -> Verifier:
    return verifier_holding([key], ISSUER, leeway=0, fetched=fetched)


def gate_of(mode: str, key: SigningKey | None = None, scope: str | None = "profiles:read", **kw) -> auth.Gate:
    verifier = verifier_of(key, **kw) if key is not None else None
    unavailable = lambda message: HTTPError(503, message)  # noqa: E731
    return auth.Gate(mode, Tokens(), verifier, Metrics(), unavailable, scope, cache_size=8)


def request(token: bytes | str | None, bearer: bool = True) -> Request:
    given = token.encode() if isinstance(token, str) else token
    return Request("GET", "/api/v1/id/1", "HTTP/1.1", True, False, given, False, bearer=bearer)


def outcome(gate: auth.Gate, req: Request) -> tuple[int, bytes]:
    """(200 and the caller, or the refusal's status and WWW-Authenticate)."""
    try:
        gate.check(req)
    except HTTPError as err:
        return err.status, err.extra
    return 200, req.caller.encode()


def refusals(gate: auth.Gate) -> dict[str, int]:
    text = gate.metrics.render().decode()
    return {
        line.split('"')[1]: int(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("userprofile_auth_refusals_total{")
    }


def test_token_mode_is_the_static_token_as_before():
    gate = gate_of(auth.TOKEN)
    assert gate.verifier is None
    assert outcome(gate, request(STATIC)) == (200, b"token")
    assert outcome(gate, request(STATIC, bearer=False)) == (200, b"token")  # x-access-token
    assert outcome(gate, request(None)) == (401, b'WWW-Authenticate: Bearer realm="userprofile"\r\n')
    assert outcome(gate, request("wrong")) == (
        401,
        b'WWW-Authenticate: Bearer realm="userprofile", error="invalid_token"\r\n',
    )
    assert {r: n for r, n in refusals(gate).items() if n} == {"missing": 1, "wrong_token": 1}
    gate.tokens.token = None
    assert outcome(gate, request(STATIC))[0] == 503
    assert gate.not_ready() == auth.NO_TOKEN_YET


def test_jwt_mode_takes_a_jwt_from_authorization_bearer_only(key):
    gate = gate_of(auth.JWT, key)
    token = key.sign(claims(ISSUER))
    assert outcome(gate, request(token)) == (200, b"svc-client")
    status, challenge = outcome(gate, request(token, bearer=False))  # x-access-token, though cached
    assert status == 401 and b'error_description="send the access token in Authorization: Bearer"' in challenge
    status, challenge = outcome(gate, request(STATIC))
    assert status == 401 and b'error="invalid_token", error_description="the token is not a JWT"' in challenge
    assert outcome(gate, request(None))[0] == 401
    assert gate.not_ready() is None  # no static token needed
    assert {r: n for r, n in refusals(gate).items() if n} == {"not_bearer": 1, "malformed": 1, "missing": 1}


def test_both_mode_takes_either(key):
    gate = gate_of(auth.BOTH, key)
    token = key.sign(claims(ISSUER))
    assert outcome(gate, request(STATIC)) == (200, b"token")
    assert outcome(gate, request(STATIC, bearer=False)) == (200, b"token")
    assert outcome(gate, request(token)) == (200, b"svc-client")
    assert outcome(gate, request(token, bearer=False))[0] == 401
    assert outcome(gate, request("wrong"))[0] == 401
    assert refusals(gate)["wrong_token"] == 1
    gate.tokens.token = None
    assert outcome(gate, request(token)) == (200, b"svc-client")  # JWTs go on without a static token
    assert outcome(gate, request("opaque"))[0] == 503
    assert gate.not_ready() == auth.NO_TOKEN_YET


def test_a_verified_token_is_kept_and_verified_once(key, monkeypatch):
    gate = gate_of(auth.JWT, key)
    assert gate.verifier is not None
    calls: list[bytes] = []
    verify = gate.verifier.verify

    def counted(token: bytes):
        calls.append(token)
        return verify(token)

    monkeypatch.setattr(gate.verifier, "verify", counted)
    token = key.sign(claims(ISSUER))
    for _ in range(5):
        assert outcome(gate, request(token))[0] == 200
    assert len(calls) == 1


def test_a_cached_token_dies_at_its_exp(key):
    gate = gate_of(auth.JWT, key)
    token = key.sign(claims(ISSUER, lifetime=1))
    assert outcome(gate, request(token))[0] == 200
    time.sleep(max(0.0, gate.cache.entries[token.encode()].expires - time.time()) + 0.05)
    status, challenge = outcome(gate, request(token))
    assert status == 401 and b'error_description="token expired"' in challenge


def test_a_cached_token_dies_when_its_key_leaves_the_set(key):
    gate = gate_of(auth.JWT, key)
    token = key.sign(claims(ISSUER))
    assert outcome(gate, request(token))[0] == 200
    assert gate.verifier is not None
    keys = gate.verifier.keys
    keys._install({})  # the provider's next key set lacks it
    assert token.encode() not in gate.cache.entries
    status, challenge = outcome(gate, request(token))
    assert status == 401 and b'error_description="signing key not known"' in challenge


def test_the_cache_is_bounded(key):
    gate = gate_of(auth.JWT, key)
    for n in range(30):
        assert outcome(gate, request(key.sign(claims(ISSUER, jti=str(n)))))[0] == 200
        assert len(gate.cache.entries) <= 8


def test_a_token_without_the_scope_is_forbidden_naming_it(key):
    gate = gate_of(auth.JWT, key)
    token = key.sign(claims(ISSUER, scope="profiles:write"))
    expected = b'WWW-Authenticate: Bearer realm="userprofile", error="insufficient_scope", scope="profiles:read"\r\n'
    assert outcome(gate, request(token)) == (403, expected)
    assert outcome(gate, request(token)) == (403, expected)  # a cache hit: the same
    assert refusals(gate)["insufficient_scope"] == 2
    assert outcome(gate_of(auth.JWT, key, scope=None), request(token))[0] == 200  # no scope asked


def test_no_key_set_yet_is_a_503_saying_why(key):
    gate = gate_of(auth.JWT, key, fetched=False)
    status, _ = outcome(gate, request(key.sign(claims(ISSUER))))
    assert status == 503
    why = "the key set https://idp.example/jwks: timed out"
    assert gate.not_ready() == f"Service Unavailable: identity provider: no key set fetched yet: {why}"


def test_every_reason_is_shown_from_the_start():
    assert set(refusals(gate_of(auth.TOKEN))) == set(auth.REASONS)


def test_the_access_log_names_the_caller_never_the_token(key):
    token = key.sign(claims(ISSUER, client_id="orders-service"))
    options = settings.defaults({"AUTH_MODE": "jwt", "AUTH_ISSUER": ISSUER, "AUTH_AUDIENCE": AUDIENCE})
    tokens = TokenKeeper(EmptyStore(), 60)  # never read: jwt mode
    service = Service(EmptyStore(), tokens, Metrics(), b"{}", options=options, verifier=verifier_of(key))
    log = io.StringIO()
    site = Site(service, options, access_log=log)
    for line in (f"Authorization: Bearer {token}", "Authorization: Bearer nope", ""):
        writer = BytesWriter()
        raw = f"GET /api/v1/id/1 HTTP/1.1\r\nHost: x\r\n{line}\r\n\r\n".replace("\r\n\r\n\r\n", "\r\n\r\n")
        Conversation(io.BufferedReader(io.BytesIO(raw.encode())), writer, site).step()
    lines = log.getvalue().splitlines()
    callers = [re.search(r" caller=(\S+)", line)[1] for line in lines]  # type: ignore[index]
    assert callers == ["orders-service", "-", "-"]
    assert "status=404" in lines[0] and "status=401" in lines[1]
    assert token not in log.getvalue()


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"AUTH_MODE": "oauth"}, "AUTH_MODE must be one of token, jwt, both, not 'oauth'"),
        ({"AUTH_ISSUER": None}, "AUTH_MODE=jwt needs AUTH_ISSUER"),
        ({"AUTH_MODE": "both", "AUTH_AUDIENCE": None}, "AUTH_MODE=both needs AUTH_AUDIENCE"),
        ({"AUTH_ALGORITHMS": "RS256,HS256"}, "AUTH_ALGORITHMS: HS256 never accepted"),
        ({"AUTH_ALGORITHMS": "none"}, "AUTH_ALGORITHMS: none never accepted"),
        ({"AUTH_ALGORITHMS": "RS256,XS1"}, "AUTH_ALGORITHMS: XS1: choose among"),
        ({"AUTH_ISSUER": "http://idp.example/x"}, "AUTH_ISSUER http://idp.example/x: http:// is accepted"),
        ({"AUTH_ISSUER": "http://10.0.0.8:8080"}, "only on a loopback address"),
        ({"AUTH_JWKS_URL": "ftp://idp.example/jwks"}, "AUTH_JWKS_URL 'ftp://idp.example/jwks': not an https:// URL"),
        ({"AUTH_CA_CERT": "/nonexistent/ca.pem"}, "AUTH_CA_CERT /nonexistent/ca.pem: no such file"),
    ],
)
def test_bad_settings_stop_the_start_saying_why(env, problem, capsys):
    full = {"AUTH_MODE": "jwt", "AUTH_ISSUER": ISSUER, "AUTH_AUDIENCE": AUDIENCE, **env}
    full = {name: value for name, value in full.items() if value is not None}  # None: unset
    found = auth.config_problem(settings.defaults(full))
    assert found is not None and problem in found, found
    argv = [f"--{name.lower().replace('_', '-')}={value}" for name, value in full.items()]
    assert userprofile_service.main(argv) == 2
    assert "cannot start: " + found in capsys.readouterr().err


def test_an_issuer_in_token_mode_is_said_to_be_unused(capsys):
    assert auth.verifier(settings.defaults({"AUTH_ISSUER": ISSUER})) is None
    assert "AUTH_ISSUER is set but AUTH_MODE is token" in capsys.readouterr().err
    assert auth.verifier(settings.defaults()) is None
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "issuer", ["https://idp.example", "http://127.0.0.1:8080/realms/x", "http://localhost:1", "http://[::1]:80"]
)
def test_good_settings_pass(issuer):
    env = {"AUTH_MODE": "jwt", "AUTH_ISSUER": issuer, "AUTH_AUDIENCE": AUDIENCE}
    assert auth.config_problem(settings.defaults(env)) is None
    assert auth.config_problem(settings.defaults()) is None  # token mode, the default


def test_the_static_token_deployment_imports_neither_pyjwt_nor_cryptography(tmp_path):
    """As serve() builds it, in a fresh interpreter: nothing of the JWT modes is loaded."""
    program = f"""
import json, sys
import settings, auth, userprofile_service
from server import UserProfileServer
from service import TokenKeeper
from stores import open_store
options = settings.defaults({{"USERPROFILE_DB": {str(tmp_path / "db")!r}}})
assert auth.config_problem(options) is None and auth.verifier(options) is None
store = open_store(options)
server = UserProfileServer(("127.0.0.1", 0), store, TokenKeeper(store, 60), options)
server.server_close()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("jwt", "cryptography", "jwks", "accesstoken"))))
"""
    found = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(found.stdout) == []
