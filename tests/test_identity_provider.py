"""The service as an OAuth 2.0 resource server in front of a real identity provider: Keycloak
(testkit/idp.py) over HTTPS with the tests' own CA, tokens got by the client-credentials grant
as a calling service gets them. Each rule a resource server must hold is a case.

Tokens no provider would issue (not yet valid, another issuer) are signed with a key the test
made and imported into the provider, so the service finds it in the provider's own key set;
every other token is the provider's, as issued or altered (tampered, alg none, HS256).
Keycloak starts once for the module (20-90 s); the realm ``rotation`` has keys of its own,
so rotating them leaves the other tests' realm alone.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
import uuid

import jwt
import pytest
from conftest import COUNT, TOKEN
from cryptography.hazmat.primitives import serialization
from terminator import Pki  # beside this file

from testkit import ROOT, ServiceProcess, wait_until
from testkit.idp import OTHER_CLIENT, OTHER_SECRET, SCOPE, SHORT_CLIENT, SHORT_SECRET, Keycloak
from testkit.issuer import AUDIENCE, SigningKey, claims, hs256_with, segment, unsigned
from testkit.jmeter import summarise
from testkit.scrape import samples

pytestmark = pytest.mark.integration

COOLDOWN = 60  # the main service's: the unknown-kid flood must cost one fetch


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def keycloak(pki, tmp_path_factory):
    work = tmp_path_factory.mktemp("keycloak")
    provider = Keycloak(work, pki.dir / "server.crt", pki.dir / "server.key", pki.ca, ("test", "rotation"))
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def own_key(keycloak):
    """A key the test made, imported into the realm ``test`` (below the priority of the key that
    signs its tokens): what it signs verifies with a key of the provider's own key set."""
    key = SigningKey("RS256")
    pem = key.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    key.kid = keycloak.add_signing_key("test", priority=10, private_pem=pem)
    return key


def service_env(keycloak, pki, realm="test", **more) -> dict:
    return {
        "AUTH_MODE": "jwt",
        "AUTH_ISSUER": keycloak.issuer(realm),
        "AUTH_AUDIENCE": AUDIENCE,
        "AUTH_SCOPE": SCOPE,
        "AUTH_CA_CERT": str(pki.ca),
        "AUTH_LEEWAY_SECONDS": "1",
        "AUTH_TIMEOUT_SECONDS": "2",
        **more,
    }


def started(seeded_db, tmp_path_factory, env: dict, wait_for: str = "/readyz") -> ServiceProcess:
    log = tmp_path_factory.mktemp("service") / "service.log"
    return ServiceProcess({"USERPROFILE_DB": str(seeded_db), **env}, log_path=log).start(wait_for=wait_for)


@pytest.fixture(scope="module")
def service(keycloak, own_key, pki, seeded_db, tmp_path_factory):
    svc = started(seeded_db, tmp_path_factory, service_env(keycloak, pki, AUTH_JWKS_COOLDOWN_SECONDS=str(COOLDOWN)))
    yield svc
    svc.stop()
    assert "Traceback" not in svc.log()


def refused(svc: ServiceProcess, token: str, headers: dict | None = None) -> tuple[int, str, str]:
    """(status, error, error_description) of a request with this bearer token."""
    status, answer, _ = svc.get("/api/v1/id/1", token, headers=headers)
    challenge = answer.get("WWW-Authenticate", "")
    error = re.search(r'error="([^"]*)"', challenge)
    description = re.search(r'error_description="([^"]*)"', challenge)
    return status, error.group(1) if error else "", description.group(1) if description else ""


def metric(svc: ServiceProcess, name: str, label: str) -> int:
    """The count of a metric's sample whose one label has this value (a reason, an outcome)."""
    found = samples(svc.get("/metrics")[2].decode())
    return int(sum(value for sample, labels, value in found if sample == name and label in labels.values()))


def parts(token: str) -> tuple[dict, dict, str]:
    head, payload, signature = token.split(".")
    decode = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return decode(head), decode(payload), signature


def test_a_valid_token_is_served_and_the_caller_logged(service, keycloak):
    token = keycloak.token()
    status, _, body = service.get("/api/v1/id/1", token)
    assert status == 200 and json.loads(body)[0]["record_id"] == 1
    wait_until(lambda: "caller=svc-client" in service.log(), 5)
    assert re.search(r"route=/api/v1/id status=200 .* bytes=\d+ caller=svc-client ", service.log(), re.M)
    assert token not in service.log() and token.split(".")[2] not in service.log()


def test_an_expired_token_is_refused_even_once_cached(service, keycloak):
    token = keycloak.token(client=SHORT_CLIENT, secret=SHORT_SECRET)  # lives 3 s
    assert service.get("/api/v1/id/1", token)[0] == 200
    expires = parts(token)[1]["exp"] + 1  # the leeway
    time.sleep(max(0.0, expires - time.time()) + 0.5)
    assert refused(service, token) == (401, "invalid_token", "token expired")
    assert metric(service, "userprofile_auth_refusals_total", "expired") >= 1


def test_a_token_not_yet_valid_is_refused(service, own_key, keycloak):
    token = own_key.sign(claims(keycloak.issuer(), nbf=int(time.time()) + 120))
    assert refused(service, token) == (401, "invalid_token", "token not yet valid")


def test_a_token_for_another_audience_is_refused(service, keycloak):
    token = keycloak.token(client=OTHER_CLIENT, secret=OTHER_SECRET)
    assert parts(token)[1]["aud"] == "billing"
    assert refused(service, token) == (401, "invalid_token", "wrong audience")


def test_a_token_of_another_issuer_is_refused(service, own_key, keycloak):
    token = own_key.sign(claims(keycloak.issuer("rotation")))
    assert refused(service, token) == (401, "invalid_token", "wrong issuer")


def test_a_tampered_payload_is_refused(service, keycloak):
    head, _payload, signature = keycloak.token().split(".")
    altered = parts(keycloak.token())[1] | {"azp": "svc-admin", "scope": "profiles:read profiles:write"}
    token = f"{head}.{segment(altered)}.{signature}"
    assert refused(service, token) == (401, "invalid_token", "signature does not verify")


def test_alg_none_is_refused(service, keycloak):
    head, payload, _ = parts(keycloak.token())
    token = unsigned(head, payload)
    assert refused(service, token) == (401, "invalid_token", "signature algorithm not accepted")


def test_hs256_signed_with_the_providers_public_key_is_refused(service, keycloak):
    """Algorithm confusion: the provider's public key, fetched as anyone can, as an HMAC secret."""
    head, payload, _ = parts(keycloak.token())
    jwks = keycloak.request("GET", "/realms/test/protocol/openid-connect/certs")[2]
    public = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == head["kid"])).key
    for secret in (
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
    ):
        assert refused(service, hs256_with(secret, head, payload)) == (
            401,
            "invalid_token",
            "signature algorithm not accepted",
        )


def test_a_flood_of_unknown_kids_costs_one_fetch_then_is_refused(service, keycloak):
    stranger = SigningKey("RS256")
    before = metric(service, "userprofile_auth_key_set_fetches_total", "ok")
    for _ in range(30):
        stranger.kid = uuid.uuid4().hex
        assert refused(service, stranger.sign(claims(keycloak.issuer()))) == (
            401,
            "invalid_token",
            "signing key not known",
        )
    assert metric(service, "userprofile_auth_key_set_fetches_total", "ok") - before == 1
    assert metric(service, "userprofile_auth_refusals_total", "unknown_key") == 30
    assert service.get("/api/v1/id/1", keycloak.token())[0] == 200  # the provider's own keys still work


def test_a_token_without_the_scope_is_forbidden(service, keycloak):
    token = keycloak.token(scope=None)
    assert parts(token)[1].get("scope", "") == ""
    status, answer, body = service.get("/api/v1/id/1", token)
    assert status == 403
    assert answer["WWW-Authenticate"] == 'Bearer realm="userprofile", error="insufficient_scope", scope="profiles:read"'
    assert b"profiles:read" in body
    assert service.get("/api/v1/id/1", token)[0] == 403  # cached: the same answer


def test_the_static_token_is_refused_in_jwt_mode(service, keycloak):
    assert refused(service, TOKEN) == (401, "invalid_token", "the token is not a JWT")
    status, answer, _ = service.get("/api/v1/id/1", headers={"x-access-token": TOKEN})
    assert status == 401 and "Authorization: Bearer" in answer["WWW-Authenticate"]
    status, _, _ = service.get("/api/v1/id/1", headers={"x-access-token": keycloak.token()})
    assert status == 401  # a JWT too: x-access-token is not where a JWT is taken from


def test_both_mode_takes_either_kind(keycloak, pki, seeded_db, tmp_path_factory):
    svc = started(seeded_db, tmp_path_factory, service_env(keycloak, pki, AUTH_MODE="both"))
    try:
        jwt_token = keycloak.token()
        assert svc.get("/api/v1/id/1", jwt_token)[0] == 200
        assert svc.get("/api/v1/id/1", TOKEN)[0] == 200
        assert svc.get("/api/v1/id/1", headers={"x-access-token": TOKEN})[0] == 200
        assert svc.get("/api/v1/id/1", headers={"x-access-token": jwt_token})[0] == 401
        assert refused(svc, "not-the-token") == (401, "invalid_token", "")
        wait_until(lambda: "caller=token" in svc.log(), 5)
        assert "caller=svc-client" in svc.log() and "caller=token" in svc.log()
    finally:
        svc.stop()


def test_a_rotated_key_is_used_without_a_restart_and_a_removed_one_refused(keycloak, pki, seeded_db, tmp_path_factory):
    svc = started(
        seeded_db,
        tmp_path_factory,
        service_env(keycloak, pki, "rotation", AUTH_JWKS_COOLDOWN_SECONDS="1", AUTH_JWKS_REFRESH_SECONDS="3"),
    )
    try:
        old = keycloak.token("rotation")
        old_kid = parts(old)[0]["kid"]
        assert svc.get("/api/v1/id/1", old)[0] == 200
        new_kid = keycloak.add_signing_key("rotation", priority=200)
        new = keycloak.token("rotation")
        assert parts(new)[0]["kid"] == new_kid != old_kid
        assert svc.get("/api/v1/id/1", new)[0] == 200  # fetched for the unknown kid, no restart
        assert svc.get("/api/v1/id/1", old)[0] == 200  # the old key is still in the set
        keycloak.remove_signing_key("rotation", old_kid)
        # Gone after the next periodic fetch (3 s), though the old token is cached and unexpired.
        assert wait_until(lambda: refused(svc, old)[0] == 401, 15, 0.5)
        assert refused(svc, old) == (401, "invalid_token", "signing key not known")
        assert svc.get("/api/v1/id/1", new)[0] == 200
        assert "key set changed" in svc.log()
    finally:
        svc.stop()


def test_jmeter_sends_a_token_from_a_file(service, keycloak, tmp_path):
    """The load test's plan with the provider's token in a file (jmeter/loadtest.py --token-file),
    as `make loadtest LOADTEST_ARGS=--idp` runs it: every sample a 200, the token nowhere written."""
    token_file = tmp_path / "token"
    token_file.write_text(keycloak.token() + "\n")  # as a shell's redirect leaves it
    jtl = tmp_path / "results.jtl"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "jmeter" / "loadtest.py"),
            *("--target", service.base, "--token-file", str(token_file), "--jtl", str(jtl)),
            *("--duration", "3", "--threads", "2", "--maxid", str(COUNT)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    summary = summarise(jtl)
    assert summary["samples"] > 50 and summary["response_codes"] == {"200": summary["samples"]}
    token = token_file.read_text().strip()
    for text in (jtl.read_text(), jtl.with_suffix(".log").read_text(), run.stdout, run.stderr):
        assert token not in text


def test_a_provider_that_hangs_keeps_the_cached_keys_working(service, keycloak, pki, seeded_db, tmp_path_factory):
    fresh = keycloak.token()  # never sent yet: verified with the keys the service holds
    keycloak.freeze()
    try:
        assert service.get("/api/v1/id/1", fresh)[0] == 200
        assert service.get("/readyz")[0] == 200
        # A service started now has no key set: not ready, saying why, and answering at once.
        late = started(seeded_db, tmp_path_factory, service_env(keycloak, pki), wait_for="/healthz")
        try:
            assert wait_until(lambda: b"timed out" in late.get("/readyz")[2], 10)
            status, _, body = late.get("/readyz", timeout=2)
            assert status == 503 and b"identity provider: no key set fetched yet: " in body
            began = time.monotonic()
            status, _, body = late.get("/api/v1/id/1", fresh, timeout=5)
            assert status == 503 and time.monotonic() - began < 1.0
        finally:
            keycloak.thaw()
        assert wait_until(lambda: late.get("/readyz")[0] == 200, 40, 0.5)  # it retries by itself
        assert late.get("/api/v1/id/1", fresh)[0] == 200
        late.stop()
    finally:
        keycloak.thaw()


def test_a_provider_stopped_keeps_the_cached_keys_working(service, keycloak):
    """Last: the provider is gone for good."""
    fresh = keycloak.token()
    keycloak.stop()
    assert service.get("/api/v1/id/1", fresh)[0] == 200
    assert service.get("/readyz")[0] == 200
    assert service.get("/api/v1/id/1", fresh)[0] == 200
