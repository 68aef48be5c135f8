"""The service process in JWT mode against the tests' own issuer (testkit.issuer): over a
real socket on loopback (socket tier, so it runs on 3.13 too), and over HTTPS with the tests'
CA made by openssl (external tier): the certificate, its CA and its name verified."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest
from terminator import Pki  # beside this file

from jwks import Fetcher, FetchError
from testkit import ROOT, ServiceProcess, wait_until
from testkit.issuer import ALGORITHMS, LoopbackIssuer, SigningKey, claims


@pytest.fixture(scope="module")
def keys() -> list[SigningKey]:
    return [SigningKey(alg) for alg in ALGORITHMS]


def started(seeded_db, tmp_path, env: dict, wait_for: str = "/readyz") -> ServiceProcess:
    log = tmp_path / "service.log"
    return ServiceProcess({"USERPROFILE_DB": str(seeded_db), **env}, log_path=log).start(wait_for=wait_for)


@pytest.mark.socket
def test_each_algorithm_over_a_socket_and_what_the_service_says(keys, seeded_db, tmp_path):
    with LoopbackIssuer(keys) as issuer:
        svc = started(seeded_db, tmp_path, issuer.env(AUTH_SCOPE="profiles:read"))
        try:
            for key in keys:
                assert svc.get("/api/v1/id/1", key.sign(claims(issuer.url)))[0] == 200, key.alg
            token = keys[0].sign(claims(issuer.url))
            assert svc.get("/api/v1/id/1", headers={"x-access-token": token})[0] == 401
            assert svc.get("/api/v1/id/1", keys[0].sign(claims(issuer.url, scope="other")))[0] == 403
            metrics = svc.get("/metrics")[2].decode()
            assert 'userprofile_auth_refusals_total{reason="not_bearer"} 1' in metrics
            assert 'userprofile_auth_refusals_total{reason="insufficient_scope"} 1' in metrics
            assert 'userprofile_auth_key_set_fetches_total{outcome="ok"} 1' in metrics
            assert issuer.fetches == 1
        finally:
            svc.stop()
    assert "caller=svc-client" in svc.log() and token not in svc.log()


@pytest.mark.socket
def test_not_ready_until_a_key_set_is_fetched_then_ready_by_itself(keys, seeded_db, tmp_path):
    with LoopbackIssuer(keys) as issuer:
        issuer.down = True
        svc = started(seeded_db, tmp_path, issuer.env(), wait_for="/healthz")
        try:
            assert wait_until(lambda: b"HTTP 503" in svc.get("/readyz")[2], 10)
            status, _, body = svc.get("/readyz")
            assert status == 503
            assert b"identity provider: no key set fetched yet: the discovery document http://127.0.0.1:" in body
            assert svc.get("/api/v1/id/1", keys[0].sign(claims(issuer.url)))[0] == 503
            issuer.down = False
            assert wait_until(lambda: svc.get("/readyz")[0] == 200, 15)
            assert svc.get("/api/v1/id/1", keys[0].sign(claims(issuer.url)))[0] == 200
        finally:
            svc.stop()


@pytest.mark.socket
def test_an_http_issuer_off_loopback_stops_the_start():
    run = subprocess.run(
        [sys.executable, str(ROOT / "userprofile_service.py"), "--port", "0"],
        env={"AUTH_MODE": "jwt", "AUTH_ISSUER": "http://idp.example/realms/x", "AUTH_AUDIENCE": "userprofile"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert "cannot start: AUTH_ISSUER http://idp.example/realms/x: http:// is accepted only on a loopback" in run.stderr


@pytest.mark.socket
def test_a_provider_that_drips_its_answer_is_cut_at_the_timeout():
    """A byte every 0.2 s keeps each read within the socket's timeout; the fetch's deadline ends it."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            while not stop.wait(0.2):
                try:
                    conn.sendall(b" ")
                except OSError:
                    return

    threading.Thread(target=drip, daemon=True).start()
    began = time.monotonic()
    try:
        with pytest.raises(FetchError, match="not answered within 1 s"):
            Fetcher(1, None).get_json(f"http://127.0.0.1:{listener.getsockname()[1]}/jwks", "the key set")
        assert time.monotonic() - began < 3
    finally:
        stop.set()
        listener.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.external
@pytest.mark.parametrize(
    ("certificate", "ca", "host", "cause"),
    [
        ("server", "ca", "localhost", None),
        ("server", "ca", "127.0.0.1", None),
        ("server", "other-ca", "localhost", b"certificate verify failed: unable to get local issuer certificate"),
        ("server", None, "localhost", b"certificate verify failed"),  # the system's CAs do not know the tests' CA
        ("wrong-name", "ca", "localhost", b"Hostname mismatch, certificate is not valid for 'localhost'"),
    ],
    ids=["ca", "ca-by-address", "other-ca", "system-cas", "wrong-name"],
)
def test_the_issuer_over_https_is_verified(keys, pki, seeded_db, tmp_path, certificate, ca, host, cause):
    with LoopbackIssuer(keys, pki.dir / f"{certificate}.pem", host) as issuer:
        env = issuer.env(**({"AUTH_CA_CERT": str(pki.dir / f"{ca}.pem")} if ca else {}))
        svc = started(seeded_db, tmp_path, env, wait_for="/healthz")
        try:
            if cause is None:
                assert wait_until(lambda: svc.get("/readyz")[0] == 200, 10)
                assert svc.get("/api/v1/id/1", keys[1].sign(claims(issuer.url)))[0] == 200
            else:
                assert wait_until(lambda: cause in svc.get("/readyz")[2], 10), svc.get("/readyz")[2]
                assert issuer.fetches == 0
        finally:
            svc.stop()


@pytest.mark.external
def test_auth_ca_cert_is_the_one_ca_trusted(pki):
    """With AUTH_CA_CERT, the system's CAs are not loaded at all: only that file's."""
    trusted = Fetcher(1, str(pki.ca)).context.get_ca_certs()
    assert [ca["subject"] for ca in trusted] == [((("commonName", "test ca"),),)]
