"""The identity provider's signing keys: discovery, the key set (``kid`` -> key), its refreshes.

Imported only when AUTH_MODE is ``jwt`` or ``both`` (auth.py), as it needs PyJWT and
cryptography. ``KeySet`` holds the keys of the provider's JWKS that may verify an allowed
algorithm, replaced whole at each fetch. A thread fetches it at start-up, then every
AUTH_JWKS_REFRESH_SECONDS (sooner when the answer's ``max-age`` says so, never sooner than the
cool-down), and at once for a ``kid`` it does not hold: at most one such fetch per
AUTH_JWKS_COOLDOWN_SECONDS, however many made-up ``kid``\\ s arrive. A failed fetch keeps the
keys fetched before. PyJWT's own ``PyJWKClient`` is not used: its cache refuses a just-rotated
``kid`` for 30 s and keeps a deleted key for 5 minutes, whatever the settings say.

Everything is fetched over HTTPS with the certificate and its name verified (AUTH_CA_CERT, when
set, is the one CA trusted); ``http://`` only on a loopback address, redirects included.
"""

from __future__ import annotations

import ipaddress
import json
import re
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPMessage
from typing import IO, Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from logs import log

MAX_DOCUMENT = 1 << 20  # a discovery document or key set larger than this is refused
FIRST_RETRY, LONGEST_RETRY = 0.5, 30.0  # a failed fetch is retried after these, doubling
KID_WAIT = 1.0  # the request that asked for a fetch (an unknown kid) waits this long for it at most
MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-)?max-age\s*=\s*\"?(\d+)", re.I)
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
CURVE_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
ASYMMETRIC = RSA_ALGORITHMS | frozenset(CURVE_ALGORITHMS.values()) | {"EdDSA"}


class FetchError(Exception):
    """A discovery document or key set that could not be had, and why (safe to log)."""


def url_problem(url: str, what: str) -> str | None:
    """Why ``url`` may not be fetched, or None: https://, or http:// on a loopback address."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname:
        if is_loopback(parts.hostname):
            return None
        return f"{what} {url}: http:// is accepted only on a loopback address (127.0.0.1, ::1, localhost); use https://"
    return f"{what} {url!r}: not an https:// URL"


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def algorithms_of(key: Any) -> frozenset[str]:
    """The algorithms a public key can verify: a key never verifies another family's algorithm."""
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        name = CURVE_ALGORITHMS.get(key.curve.name)
        return frozenset({name}) if name else frozenset()
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return frozenset({"EdDSA"})
    return frozenset()  # a private or symmetric key: never


@dataclass(frozen=True, slots=True)
class Key:
    key: Any  # a cryptography public key
    algorithms: frozenset[str]  # of the allow-list, those this key may verify


def parse_key_set(document: Any, allowed: frozenset[str]) -> dict[str, Key]:
    """The signing keys of a JWK set (RFC 7517) that may verify an allowed algorithm, by ``kid``
    ("" for a key without one). Encryption keys, symmetric keys and keys with private parts are
    left out, as are keys whose ``alg`` is not allowed."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise FetchError('the key set is not a JWK set (no "keys" list)')
    keys = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig" or "d" in jwk or jwk.get("kty") == "oct":
            continue
        ops = jwk.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            continue
        try:
            key = jwt.PyJWK(jwk).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
            continue  # a kind of key this service cannot use
        algorithms = algorithms_of(key) & allowed
        if "alg" in jwk:
            algorithms &= {jwk["alg"]}
        kid = jwk.get("kid", "")
        if algorithms and isinstance(kid, str):
            keys[kid] = Key(key, algorithms)
    return keys


def max_age(cache_control: str | None) -> float | None:
    """The lifetime a Cache-Control header gives (s-maxage or max-age), or None."""
    found = MAX_AGE.search(cache_control or "")
    return float(found.group(1)) if found else None


class SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects follow the rule of the first URL: never to http:// off loopback."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: HTTPMessage, newurl: str
    ) -> urllib.request.Request | None:
        problem = url_problem(newurl, "a redirect to")
        if problem:
            raise urllib.error.HTTPError(newurl, code, problem, headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class Fetcher:
    """GETs of JSON documents over verified HTTPS (or http:// on loopback), within a timeout."""

    def __init__(self, timeout: float, ca_cert: str | None) -> None:
        self.timeout = timeout
        # With a CA file, create_default_context trusts that file alone (not the system's CAs).
        self.context = ssl.create_default_context(cafile=ca_cert)
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=self.context), SafeRedirects())

    def get_json(self, url: str, what: str) -> tuple[Any, float | None]:
        """The document and the lifetime its Cache-Control gives; FetchError saying why not."""
        problem = url_problem(url, what)
        if problem:
            raise FetchError(problem)
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        # The timeout bounds each wait on the socket; the deadline, the whole fetch (a provider
        # that sends a byte a second would otherwise hold the fetching thread for ever).
        deadline = time.monotonic() + self.timeout
        try:
            with self.opener.open(request, timeout=self.timeout) as answer:  # nosec B310  # the scheme is checked above
                body = b""
                while len(body) <= MAX_DOCUMENT and (chunk := answer.read1(65536)):
                    body += chunk
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"not answered within {self.timeout:g} s")
                lifetime = max_age(answer.headers.get("Cache-Control"))
        except urllib.error.HTTPError as exc:
            raise FetchError(f"{what} {url}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):  # the CA or the name: say which
                text = f"certificate verify failed: {reason.verify_message}"
            else:
                text = getattr(reason, "strerror", None) or str(reason)
            raise FetchError(f"{what} {url}: {text}") from None
        except (OSError, ValueError) as exc:  # a timeout, a reset, a malformed answer
            raise FetchError(f"{what} {url}: {type(exc).__name__}: {exc}") from None
        if len(body) > MAX_DOCUMENT:
            raise FetchError(f"{what} {url}: larger than {MAX_DOCUMENT} bytes")
        try:
            return json.loads(body), lifetime
        except ValueError:
            raise FetchError(f"{what} {url}: not JSON") from None


class KeySet:
    """The provider's keys by ``kid``, fetched by a thread of its own (see the module docstring)."""

    def __init__(
        self,
        fetcher: Fetcher,
        allowed: frozenset[str],
        refresh: float,
        cooldown: float,
        issuer: str | None = None,
        jwks_url: str | None = None,
    ) -> None:
        self.fetcher = fetcher
        self.allowed = allowed
        self.refresh = refresh
        self.cooldown = cooldown
        self.issuer = issuer
        self.jwks_url = jwks_url  # found by discovery when not given
        self.discover = jwks_url is None
        self.keys: dict[str, Key] = {}  # replaced whole: a reader never sees one half-made
        self.fetched = False  # a key set was fetched once: from then on the keys are kept, whatever fails
        self.problem = "not fetched yet"  # why the last fetch failed
        # Called with each fetch's outcome ("ok", "failed") and with the kids a fetch removed.
        self.counted: Callable[[str], None] = lambda outcome: None
        self.removed: Callable[[set[str]], None] = lambda kids: None
        self._generation = 0  # fetches made: a waiter knows when the one it asked for is done
        self._changed = threading.Condition()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_asked = -float("inf")  # when a fetch for an unknown kid was last asked for
        self._retry = FIRST_RETRY

    # -- the request path ---------------------------------------------------
    def find(self, kid: str | None) -> Key | None:
        """The key for ``kid``; for one not held, a fetch (at most one per cool-down) that the
        request asking for it waits for, up to KID_WAIT. A token without a kid is verified by
        the only key of a set of one."""
        keys = self.keys
        if kid is None:
            return next(iter(keys.values())) if len(keys) == 1 else None
        key = keys.get(kid)
        if key is not None:
            return key
        with self._changed:
            now = time.monotonic()
            if now - self._last_asked < self.cooldown:
                return None
            self._last_asked = now
            generation = self._generation
            self._wake.set()
            self._changed.wait_for(lambda: self._generation != generation, KID_WAIT)
        return self.keys.get(kid)

    # -- the fetching thread ------------------------------------------------
    def start(self) -> None:
        threading.Thread(target=self._run, name="key-set", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        delay = 0.0
        while True:
            self._wake.wait(delay)
            if self._stop.is_set():
                return
            self._wake.clear()
            delay = self.fetch()

    def fetch(self) -> float:
        """Fetch the key set once (discovering its URL first when needed); the seconds until
        the next periodic fetch."""
        try:
            keys, lifetime = self._get()
        except FetchError as exc:
            delay = self._failed(str(exc))
        else:
            self._install(keys)
            self._retry = FIRST_RETRY
            delay = self.refresh if lifetime is None else min(self.refresh, max(lifetime, self.cooldown))
        with self._changed:
            self._generation += 1
            self._changed.notify_all()
        return delay

    def _get(self) -> tuple[dict[str, Key], float | None]:
        if self.jwks_url is None:
            self.jwks_url = self._discovered()
        try:
            document, lifetime = self.fetcher.get_json(self.jwks_url, "the key set")
        except FetchError:
            if self.discover:
                self.jwks_url = None  # found again next time: the provider may have moved it
            raise
        keys = parse_key_set(document, self.allowed)
        if not keys:
            raise FetchError(f"the key set {self.jwks_url}: no signing key for {', '.join(sorted(self.allowed))}")
        return keys, lifetime

    def _discovered(self) -> str:
        """The key set's URL from the issuer's discovery document: OpenID Connect's, else
        RFC 8414's (whose well-known path goes before the issuer's own path)."""
        assert self.issuer is not None  # nosec B101  # auth.py gives an issuer when there is no jwks_url
        issuer = self.issuer
        parts = urllib.parse.urlsplit(issuer)
        urls = (
            issuer.rstrip("/") + "/.well-known/openid-configuration",
            f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{parts.path.rstrip('/')}",
        )
        first: FetchError | None = None
        for url in urls:
            try:
                document, _ = self.fetcher.get_json(url, "the discovery document")
                break
            except FetchError as exc:
                first = first or exc
        else:
            assert first is not None  # nosec B101  # the loop ran
            raise first
        named = document.get("issuer") if isinstance(document, dict) else None
        if named != issuer:
            raise FetchError(f"the discovery document {url} names the issuer {named!r}, not AUTH_ISSUER {issuer!r}")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise FetchError(f"the discovery document {url} has no jwks_uri")
        return jwks_uri

    def _install(self, keys: dict[str, Key]) -> None:
        self.counted("ok")
        before = self.keys
        self.keys = keys
        removed = set(before) - set(keys)
        if not self.fetched:
            log(f"identity provider: key set fetched from {self.jwks_url}: kids {sorted(keys)}")
        elif removed or set(keys) != set(before):
            added = sorted(set(keys) - set(before))
            log(f"identity provider: key set changed: added {added}, removed {sorted(removed)}")
        elif self.problem:
            log("identity provider: key set fetched again")
        self.fetched = True
        self.problem = ""
        if removed:
            self.removed(removed)

    def _failed(self, problem: str) -> float:
        self.counted("failed")
        if problem != self.problem:  # once per cause, not at every retry
            kept = f"keeping the {len(self.keys)} keys fetched before" if self.fetched else "JWTs answer 503 until then"
            log(f"identity provider: cannot fetch the key set: {problem}; {kept}")
        self.problem = problem
        delay, self._retry = self._retry, min(self._retry * 2, LONGEST_RETRY)
        return delay
