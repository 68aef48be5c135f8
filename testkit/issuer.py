"""An issuer the tests and the bench make themselves: their own signing keys, tokens signed with
them, and (``LoopbackIssuer``) a discovery document and key set served over http:// on
127.0.0.1. For the rules' unit tests and the bench; the issue's cases run against a real
identity provider (``testkit.idp``, Keycloak).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import ssl
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from accesstoken import Verifier
from jwks import KeySet, parse_key_set

# The algorithms the tests sign with, and a key of the type each needs.
ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
AUDIENCE = "userprofile"


def private_key(alg: str) -> Any:
    if alg.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(alg)


class SigningKey:
    """A private key, its kid, and its public half as a JWK."""

    def __init__(self, alg: str = "RS256", kid: str | None = None) -> None:
        self.alg = alg
        self.kid = kid or f"{alg.lower()}-{uuid.uuid4().hex[:8]}"
        self.key = private_key(alg)

    def jwk(self) -> dict:
        public = jwt.get_algorithm_by_name(self.alg).to_jwk(self.key.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": self.alg}

    def sign(self, claims: dict, headers: dict | None = None, alg: str | None = None) -> str:
        return jwt.encode(claims, self.key, algorithm=alg or self.alg, headers={"kid": self.kid, **(headers or {})})


def claims(issuer: str, audience: str | list = AUDIENCE, lifetime: float = 300, **more: Any) -> dict:
    """An access token's claims, as a provider issues them to a service (client credentials)."""
    now = int(time.time())
    return {
        "iss": issuer,
        "aud": audience,
        "sub": "svc-client",
        "client_id": "svc-client",
        "scope": "profiles:read",
        "iat": now,
        "nbf": now,
        "exp": int(now + lifetime),
        "jti": uuid.uuid4().hex,
        **more,
    }


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(part: dict) -> str:
    """A JWT's header or payload segment."""
    return b64url(json.dumps(part).encode())


def unsigned(header: dict, payload: dict) -> str:
    """A token with no signature, as `alg: none` asks."""
    return f"{segment(header | {'alg': 'none'})}.{segment(payload)}."


def hs256_with(secret: bytes, header: dict, payload: dict) -> str:
    """A token signed HS256 with this secret: algorithm confusion when the secret is a public key."""
    signing_input = f"{segment(header | {'alg': 'HS256'})}.{segment(payload)}"
    return f"{signing_input}.{b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def verifier_holding(
    keys: list[SigningKey],
    issuer: str,
    algorithms: frozenset[str] = frozenset(ALGORITHMS),
    leeway: float = 30,
    fetched: bool = True,
) -> Verifier:
    """A verifier whose key set holds these keys as if fetched, with no fetching thread: an
    unknown kid is refused at once (its cool-down has just begun)."""
    key_set = KeySet(fetcher=None, allowed=algorithms, refresh=300, cooldown=3600, issuer=issuer)  # type: ignore[arg-type]
    key_set.keys = parse_key_set({"keys": [k.jwk() for k in keys]}, algorithms)
    key_set.fetched = fetched
    key_set.problem = "" if fetched else "the key set https://idp.example/jwks: timed out"
    key_set._last_asked = time.monotonic()
    return Verifier(key_set, issuer, AUDIENCE, algorithms, leeway)


class LoopbackIssuer:
    """An issuer on http://127.0.0.1:<free port>: ``/.well-known/openid-configuration`` and
    ``/jwks`` (with ``keys``), counting the key set's fetches; ``cache_control`` is sent with it."""

    def __init__(self, keys: list[SigningKey], certificate: Path | None = None, host: str = "127.0.0.1") -> None:
        """Over HTTPS when ``certificate`` (a PEM of certificate and key) is given, named ``host``."""
        self.keys = keys
        self.fetches = 0
        self.cache_control: str | None = None
        self.down = False  # answer 503 to everything
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if issuer.down:
                    self.send_error(503)
                    return
                if self.path == "/.well-known/openid-configuration":
                    body: dict = {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks"}
                elif self.path == "/jwks":
                    issuer.fetches += 1
                    body = {"keys": [k.jwk() for k in issuer.keys]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if issuer.cache_control and self.path == "/jwks":
                    self.send_header("Cache-Control", issuer.cache_control)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if certificate is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certificate)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if certificate else "http"
        self.url = f"{scheme}://{host}:{self.server.server_address[1]}"

    def __enter__(self) -> LoopbackIssuer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def env(self, **more: str) -> dict:
        """The service's settings for this issuer, JWT mode."""
        return {"AUTH_MODE": "jwt", "AUTH_ISSUER": self.url, "AUTH_AUDIENCE": AUDIENCE, **more}
