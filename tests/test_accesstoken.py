"""accesstoken.py: the rules of a JWT access token, with keys the tests make themselves
(RS256, ES256, EdDSA, PS256), no provider, no socket."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from accesstoken import Refused, Verifier, caller_of, scopes_of
from testkit.issuer import ALGORITHMS, AUDIENCE, SigningKey, b64url, claims, hs256_with, unsigned, verifier_holding

pytestmark = pytest.mark.inprocess

ISSUER = "https://idp.example/realms/test"
ALLOWED = frozenset(ALGORITHMS)


@pytest.fixture(scope="module")
def signing() -> dict[str, SigningKey]:
    return {alg: SigningKey(alg) for alg in ALGORITHMS}


def verifier_of(keys: list[SigningKey], algorithms: frozenset[str] = ALLOWED, leeway: float = 30) -> Verifier:
    return verifier_holding(keys, ISSUER, algorithms, leeway)


def refusal(verifier: Verifier, token: str | bytes) -> tuple[str, str]:
    with pytest.raises(Refused) as refused:
        verifier.verify(token.encode() if isinstance(token, str) else token)
    return refused.value.reason, refused.value.description


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_a_valid_token_of_each_algorithm(signing, alg):
    verified = verifier_of(list(signing.values())).verify(signing[alg].sign(claims(ISSUER)).encode())
    assert verified.caller == "svc-client"
    assert verified.scopes == {"profiles:read"}
    assert verified.kid == signing[alg].kid
    assert time.time() + 300 < verified.expires <= time.time() + 330  # exp plus the leeway


def test_alg_none_is_refused(signing):
    token = unsigned({"kid": signing["RS256"].kid}, claims(ISSUER))
    assert refusal(verifier_of(list(signing.values())), token) == ("algorithm", "signature algorithm not accepted")


def test_hs256_signed_with_the_public_key_as_secret_is_refused(signing):
    """Algorithm confusion: the public key, which anyone can fetch, used as an HMAC secret."""
    rsa_key = signing["RS256"]
    secret = rsa_key.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = hs256_with(secret, {"typ": "JWT", "kid": rsa_key.kid}, claims(ISSUER))
    assert refusal(verifier_of([rsa_key]), token)[0] == "algorithm"
    # Even with HS256 on the allow-list (which config_problem refuses), an RSA key never verifies it.
    confused = verifier_of([rsa_key], ALLOWED | {"HS256"})
    assert refusal(confused, token) == ("algorithm", "signature algorithm not accepted for this key")


def test_a_key_verifies_only_its_own_family(signing):
    """An ES256 token whose kid names the RSA key: the header does not choose the algorithm."""
    es = signing["ES256"]
    token = jwt.encode(claims(ISSUER), es.key, algorithm="ES256", headers={"kid": signing["RS256"].kid})
    assert refusal(verifier_of(list(signing.values())), token)[0] == "algorithm"


def test_a_key_with_an_alg_verifies_only_that_one(signing):
    rsa_key = signing["RS256"]  # its JWK says alg RS256
    token = jwt.encode(claims(ISSUER), rsa_key.key, algorithm="PS256", headers={"kid": rsa_key.kid})
    assert refusal(verifier_of([rsa_key]), token)[0] == "algorithm"


def test_an_algorithm_off_the_allow_list_is_refused(signing):
    token = signing["EdDSA"].sign(claims(ISSUER))
    assert refusal(verifier_of(list(signing.values()), frozenset({"RS256"})), token)[0] == "algorithm"


def test_an_unknown_kid_is_refused(signing):
    stranger = SigningKey("RS256")
    assert refusal(verifier_of(list(signing.values())), stranger.sign(claims(ISSUER))) == (
        "unknown_key",
        "signing key not known",
    )


def test_a_token_without_kid_is_verified_by_a_set_of_one_key(signing):
    key = signing["ES256"]
    token = jwt.encode(claims(ISSUER), key.key, algorithm="ES256")
    assert verifier_of([key]).verify(token.encode()).kid is None
    assert refusal(verifier_of([key, signing["RS256"]]), token)[0] == "unknown_key"


def test_a_tampered_payload_is_refused(signing):
    head, _, signature = signing["RS256"].sign(claims(ISSUER, scope="profiles:read")).split(".")
    payload = b64url(json.dumps(claims(ISSUER, scope="profiles:read admin")).encode())
    assert refusal(verifier_of([signing["RS256"]]), f"{head}.{payload}.{signature}") == (
        "bad_signature",
        "signature does not verify",
    )


@pytest.mark.parametrize("token", [b"", b"not-a-jwt", b"a.b.c", b"e30.e30", "é.é.é".encode()])
def test_what_is_no_jwt_is_malformed(signing, token):
    assert refusal(verifier_of([signing["RS256"]]), token)[0] == "malformed"


def test_exp_and_the_leeway(signing):
    key = signing["RS256"]
    now = int(time.time())
    verifier = verifier_of([key], leeway=30)
    assert refusal(verifier, key.sign(claims(ISSUER, exp=now - 31))) == ("expired", "token expired")
    assert verifier.verify(key.sign(claims(ISSUER, exp=now - 20)).encode()).expires > time.time()
    no_exp = claims(ISSUER)
    del no_exp["exp"]
    assert refusal(verifier, key.sign(no_exp)) == ("missing_claim", "required claim missing: exp")


def test_nbf_and_iat_and_the_leeway(signing):
    key = signing["ES256"]
    now = int(time.time())
    verifier = verifier_of([key], leeway=30)
    assert refusal(verifier, key.sign(claims(ISSUER, nbf=now + 60))) == ("not_yet_valid", "token not yet valid")
    assert refusal(verifier, key.sign(claims(ISSUER, iat=now + 60)))[0] == "not_yet_valid"
    verifier.verify(key.sign(claims(ISSUER, nbf=now + 20, iat=now + 20)).encode())
    assert refusal(verifier_of([key], leeway=0), key.sign(claims(ISSUER, nbf=now + 5)))[0] == "not_yet_valid"
    assert refusal(verifier, key.sign(claims(ISSUER, iat="yesterday")))[0] == "malformed"


def test_aud_as_a_string_or_a_list(signing):
    key = signing["EdDSA"]
    verifier = verifier_of([key])
    verifier.verify(key.sign(claims(ISSUER, audience=AUDIENCE)).encode())
    verifier.verify(key.sign(claims(ISSUER, audience=["account", AUDIENCE])).encode())
    assert refusal(verifier, key.sign(claims(ISSUER, audience="account"))) == ("wrong_audience", "wrong audience")
    assert refusal(verifier, key.sign(claims(ISSUER, audience=["account", "billing"])))[0] == "wrong_audience"
    assert refusal(verifier, key.sign(claims(ISSUER, audience=[])))[0] == "missing_claim"  # PyJWT: none is none
    no_aud = claims(ISSUER)
    del no_aud["aud"]
    assert refusal(verifier, key.sign(no_aud)) == ("missing_claim", "required claim missing: aud")


def test_iss_must_be_the_issuer(signing):
    key = signing["PS256"]
    verifier = verifier_of([key])
    assert refusal(verifier, key.sign(claims(ISSUER + "/"))) == ("wrong_issuer", "wrong issuer")
    assert refusal(verifier, key.sign(claims("https://evil.example/realms/test")))[0] == "wrong_issuer"
    no_iss = claims(ISSUER)
    del no_iss["iss"]
    assert refusal(verifier, key.sign(no_iss))[0] == "missing_claim"


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+JWT", "JWT", None])
def test_access_token_types_are_accepted(signing, typ):
    key = signing["RS256"]
    token = jwt.encode(claims(ISSUER), key.key, algorithm="RS256", headers={"kid": key.kid, "typ": typ})
    verifier_of([key]).verify(token.encode())


@pytest.mark.parametrize("typ", ["logout+jwt", "dpop+jwt", "secevent+jwt", 7])
def test_other_types_are_refused(signing, typ):
    key = signing["RS256"]
    token = jwt.encode(claims(ISSUER), key.key, algorithm="RS256", headers={"kid": key.kid, "typ": typ})
    assert refusal(verifier_of([key]), token) == ("wrong_type", "not an access token (typ)")


def test_no_description_holds_key_material_or_an_internal_error(signing):
    key = signing["RS256"]
    verifier = verifier_of([key])
    secret_bits = {key.jwk()["n"][:16], key.kid}
    tokens = [key.sign(claims(ISSUER, exp=1)), key.sign(claims(ISSUER, audience="x")), "x.y.z"]
    for token in tokens:
        _, description = refusal(verifier, token)
        assert not any(bit in description for bit in secret_bits)
        assert "Error" not in description and "Traceback" not in description


def test_the_caller_and_the_scopes():
    assert caller_of({"sub": "u-1", "azp": "web", "client_id": "svc"}) == "svc"
    assert caller_of({"sub": "u-1", "azp": "web"}) == "web"
    assert caller_of({"sub": "u-1"}) == "u-1"
    assert caller_of({}) == "?"
    assert caller_of({"client_id": "evil client\nstatus=200"}) == "evil?client?status=200"
    assert len(caller_of({"sub": "x" * 1000})) == 100
    assert scopes_of({"scope": "a b  c"}) == {"a", "b", "c"}
    assert scopes_of({"scp": ["a", "b", 3]}) == {"a", "b"}
    assert scopes_of({"scp": "a b"}) == {"a", "b"}
    assert scopes_of({"scope": 5}) == frozenset()
