"""jwks.py: what a key set keeps, when it is fetched again, the cool-down on unknown kids, and
discovery; against a fetcher that answers from a table (no socket). Over real HTTPS, against
a real provider: test_identity_provider.py."""

from __future__ import annotations

import threading
import time

import pytest

from jwks import FIRST_RETRY, FetchError, KeySet, is_loopback, max_age, parse_key_set, url_problem
from testkit.issuer import SigningKey

pytestmark = pytest.mark.inprocess

ALLOWED = frozenset({"RS256", "PS256", "ES256", "EdDSA"})
ISSUER = "https://idp.example/realms/test"
JWKS = "https://idp.example/realms/test/certs"


class Table:
    """A fetcher whose answers are a table: url -> (document, max-age), or a FetchError."""

    def __init__(self, answers: dict) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def get_json(self, url: str, what: str):
        self.asked.append(url)
        answer = self.answers.get(url, FetchError(f"{what} {url}: HTTP 404 Not Found"))
        if isinstance(answer, Exception):
            raise answer
        return answer


def key_set(fetcher: Table, refresh: float = 300, cooldown: float = 30, jwks_url: str | None = JWKS) -> KeySet:
    return KeySet(fetcher, ALLOWED, refresh, cooldown, ISSUER, jwks_url)  # type: ignore[arg-type]


def document(*keys: SigningKey) -> dict:
    return {"keys": [k.jwk() for k in keys]}


def test_only_signing_keys_for_allowed_algorithms_are_kept():
    rsa, ec, ed = SigningKey("RS256", "rsa"), SigningKey("ES256", "ec"), SigningKey("EdDSA", "ed")
    alg_less = {k: v for k, v in rsa.jwk().items() if k != "alg"} | {"kid": "rsa-any"}
    jwks = [
        rsa.jwk(),
        ec.jwk(),
        ed.jwk(),
        alg_less,
        rsa.jwk() | {"kid": "enc", "use": "enc", "alg": "RSA-OAEP"},
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        rsa.jwk() | {"kid": "private", "d": "AAAA"},
        rsa.jwk() | {"kid": "ops", "key_ops": ["encrypt"]},
        rsa.jwk() | {"kid": "hs", "alg": "HS256"},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        "not a key",
    ]
    keys = parse_key_set({"keys": jwks}, ALLOWED)
    assert sorted(keys) == ["ec", "ed", "rsa", "rsa-any"]
    assert keys["rsa"].algorithms == {"RS256"}
    assert keys["rsa-any"].algorithms == {"RS256", "PS256"}  # of the allow-list, what RSA can verify
    assert keys["ec"].algorithms == {"ES256"} and keys["ed"].algorithms == {"EdDSA"}
    assert sorted(parse_key_set({"keys": jwks}, frozenset({"EdDSA"}))) == ["ed"]
    with pytest.raises(FetchError):
        parse_key_set({"no": "keys"}, ALLOWED)


def test_urls_https_or_http_on_loopback():
    assert url_problem("https://idp.example/x", "AUTH_ISSUER") is None
    for url in ("http://127.0.0.1:8080/x", "http://127.9.9.9/", "http://[::1]:1/", "http://localhost/x"):
        assert url_problem(url, "AUTH_ISSUER") is None, url
    assert "loopback" in (url_problem("http://idp.example/x", "AUTH_ISSUER") or "")
    assert "loopback" in (url_problem("http://10.1.2.3/x", "AUTH_ISSUER") or "")
    assert "not an https:// URL" in (url_problem("idp.example", "AUTH_ISSUER") or "")
    assert not is_loopback("localhost.evil.example") and is_loopback("LOCALHOST")


def test_max_age():
    assert max_age("public, max-age=600") == 600
    assert max_age("max-age=60, s-maxage=120") == 60
    assert max_age("no-cache") is None and max_age(None) is None


@pytest.mark.parametrize(
    ("lifetime", "delay"), [(None, 300), (10, 30), (100, 100), (10_000, 300)], ids=["none", "short", "within", "long"]
)
def test_the_next_fetch_honours_max_age_within_the_bounds(lifetime, delay):
    keys = key_set(Table({JWKS: (document(SigningKey()), lifetime)}), refresh=300, cooldown=30)
    assert keys.fetch() == delay
    assert keys.fetched and len(keys.keys) == 1


def test_a_failed_fetch_keeps_the_keys_and_retries_sooner_and_sooner():
    key = SigningKey()
    table = Table({JWKS: (document(key), None)})
    keys = key_set(table)
    keys.fetch()
    table.answers[JWKS] = FetchError("the key set: timed out")
    delays = [keys.fetch() for _ in range(10)]
    assert delays[:3] == [FIRST_RETRY, FIRST_RETRY * 2, FIRST_RETRY * 4] and max(delays) == 30
    assert keys.fetched and list(keys.keys) == [key.kid] and keys.problem == "the key set: timed out"
    table.answers[JWKS] = (document(key), None)
    assert keys.fetch() == 300 and keys.problem == ""


def test_an_empty_key_set_is_a_failure_not_an_empty_set():
    keys = key_set(Table({JWKS: ({"keys": []}, None)}))
    keys.fetch()
    assert not keys.fetched and "no signing key" in keys.problem


def test_removed_kids_are_reported():
    one, two = SigningKey(kid="one"), SigningKey(kid="two")
    table = Table({JWKS: (document(one, two), None)})
    keys = key_set(table)
    removed: list[set] = []
    keys.removed = removed.append
    keys.fetch()
    table.answers[JWKS] = (document(two), None)
    keys.fetch()
    assert removed == [{"one"}]


def test_a_flood_of_unknown_kids_costs_one_fetch_per_cooldown():
    key = SigningKey()
    table = Table({JWKS: (document(key), None)})
    keys = key_set(table, cooldown=1.0)
    keys.start()
    try:
        assert wait_for_fetch(keys)
        table.asked.clear()
        threads = [threading.Thread(target=keys.find, args=(f"made-up-{n}",)) for n in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        assert len(table.asked) == 1
        time.sleep(1.1)  # the cool-down is over: one more
        assert keys.find("made-up-again") is None
        assert len(table.asked) == 2
        assert keys.find(key.kid) is not None and len(table.asked) == 2  # a known kid costs nothing
    finally:
        keys.stop()


def test_a_rotated_kid_is_fetched_for_and_found_at_once():
    old, new = SigningKey(kid="old"), SigningKey(kid="new")
    table = Table({JWKS: (document(old), None)})
    keys = key_set(table, cooldown=0.1)
    keys.start()
    try:
        assert wait_for_fetch(keys)
        table.answers[JWKS] = (document(old, new), None)
        began = time.monotonic()
        assert keys.find("new") is not None
        assert time.monotonic() - began < 1.0
    finally:
        keys.stop()


def test_discovery_openid_then_rfc8414_and_the_issuer_checked():
    key = SigningKey()
    oidc = ISSUER + "/.well-known/openid-configuration"
    rfc8414 = "https://idp.example/.well-known/oauth-authorization-server/realms/test"
    table = Table({rfc8414: ({"issuer": ISSUER, "jwks_uri": JWKS}, None), JWKS: (document(key), None)})
    keys = key_set(table, jwks_url=None)
    keys.fetch()
    assert keys.fetched and table.asked == [oidc, rfc8414, JWKS]
    table.answers[oidc] = ({"issuer": ISSUER + "/", "jwks_uri": JWKS}, None)
    table.answers[JWKS] = FetchError("the key set: HTTP 404")  # discovered again after a failure
    keys.fetch()
    table.answers[JWKS] = (document(key), None)
    keys.fetch()
    assert "names the issuer 'https://idp.example/realms/test/', not AUTH_ISSUER" in keys.problem


def wait_for_fetch(keys: KeySet, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not keys.fetched and time.monotonic() < deadline:
        time.sleep(0.01)
    return keys.fetched
