"""Who may call the API: the token from the collection, OAuth 2.0 JWT access tokens, or either.

AUTH_MODE chooses, once at start-up, the check ``Gate.check`` runs before every ``/api/v1/``
lookup (docs/auth.md):

- ``token`` (the default): the token read from ``service_auth:1`` (``service.TokenKeeper``), in
  ``Authorization: Bearer`` or ``x-access-token``, compared in constant time.
- ``jwt``: an access token from the team's identity provider, in ``Authorization: Bearer`` only,
  verified by ``accesstoken.Verifier`` with the provider's keys (``jwks.KeySet``).
- ``both``: the static token or a JWT, for moving callers over one by one.

A kept-alive caller sends the same JWT many times, so a verified one is kept in a bounded
cache by its bytes until its ``exp`` (plus the leeway) or until its key leaves the key set: a
hit costs a dictionary lookup and a clock read. PyJWT and cryptography are imported only in
the JWT modes (``verifier``), so the static-token deployment loads nothing new.

A refusal is a 401 whose ``WWW-Authenticate`` says ``invalid_token`` and why, or a 403
``insufficient_scope`` naming the scope (RFC 6750 3.1); each is counted by reason in /metrics.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from answers import HTTPError
from httpparse import Request
from logs import log
from metrics import Metrics
from options import Options

if TYPE_CHECKING:
    from accesstoken import Verified, Verifier

TOKEN, JWT, BOTH = "token", "jwt", "both"
MODES = (TOKEN, JWT, BOTH)
STATIC_CALLER = "token"  # the access log's caller= for the shared static token
REALM = "userprofile"
# No token: the challenge alone (RFC 6750 3.1); a wrong one says so, so a client knows to get a new one.
BEARER_CHALLENGE = b'WWW-Authenticate: Bearer realm="%s"\r\n' % REALM.encode()
INVALID_TOKEN = b'WWW-Authenticate: Bearer realm="%s", error="invalid_token"\r\n' % REALM.encode()
NO_TOKEN_YET = "Service Unavailable: no service token has been read yet"
NO_KEYS_YET = "identity provider: no key set fetched yet: "
HMAC_OR_NONE = ("none", "HS256", "HS384", "HS512")
# Every reason a refusal is counted under (/metrics shows each from the start, at 0).
REASONS = (
    "missing",
    "wrong_token",
    "not_bearer",
    "malformed",
    "algorithm",
    "wrong_type",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
    "missing_claim",
    "invalid",
    "insufficient_scope",
)


class StaticToken(Protocol):
    """What the gate needs of ``service.TokenKeeper``: the token read, or None, and why not."""

    token: bytes | None
    problem: str | None  # why no token is in force, in its log line's words


def challenge(description: str) -> bytes:
    """A 401's WWW-Authenticate for a token refused, and why (RFC 6750 3: no quote or backslash in it)."""
    return b'WWW-Authenticate: Bearer realm="%s", error="invalid_token", error_description="%s"\r\n' % (
        REALM.encode(),
        description.replace('"', "'").replace("\\", "/").encode(),
    )


NOT_BEARER = challenge("send the access token in Authorization: Bearer")


def algorithms(options: Options) -> frozenset[str]:
    return frozenset(a.strip() for a in options.auth_algorithms.split(",") if a.strip())


def config_problem(options: Options) -> str | None:
    """What is wrong with the AUTH_* settings, as a start-up error, or None."""
    mode = options.auth_mode
    if mode not in MODES:
        return f"AUTH_MODE must be one of {', '.join(MODES)}, not {mode!r}"
    if mode == TOKEN:
        return None
    try:
        from jwks import ASYMMETRIC, url_problem  # only here: it needs PyJWT and cryptography
    except ImportError as exc:
        return f"AUTH_MODE={mode} needs PyJWT and cryptography (requirements.txt): {exc}"

    if not options.auth_issuer:
        return f"AUTH_MODE={mode} needs AUTH_ISSUER, the provider's issuer URL (the iss its tokens carry)"
    if not options.auth_audience:
        return f"AUTH_MODE={mode} needs AUTH_AUDIENCE, the aud this service's tokens carry"
    allowed = algorithms(options)
    refused = sorted(a for a in allowed if a.upper() in HMAC_OR_NONE or a.lower() == "none")
    if refused:
        return f"AUTH_ALGORITHMS: {', '.join(refused)} never accepted: a key set's public keys are no secret"
    unknown = sorted(allowed - ASYMMETRIC)
    if unknown or not allowed:
        return f"AUTH_ALGORITHMS: {', '.join(unknown) or 'empty'}: choose among {', '.join(sorted(ASYMMETRIC))}"
    for url, name in ((options.auth_issuer, "AUTH_ISSUER"), (options.auth_jwks_url, "AUTH_JWKS_URL")):
        problem = url and url_problem(url, name)
        if problem:
            return problem
    ca = options.auth_ca_cert
    if ca and not Path(ca).is_file():
        return f"AUTH_CA_CERT {ca}: no such file"
    return None


def verifier(options: Options) -> Verifier | None:
    """The JWT verifier and its key set (not yet fetching: ``keys.start()``), or None in token mode."""
    if options.auth_mode == TOKEN:
        if options.auth_issuer or options.auth_jwks_url:  # half a configuration: say what is in force
            log("auth: AUTH_ISSUER is set but AUTH_MODE is token: only the static token is accepted")
        return None
    from accesstoken import Verifier
    from jwks import Fetcher, KeySet

    allowed = algorithms(options)
    fetcher = Fetcher(options.auth_timeout, options.auth_ca_cert)
    keys = KeySet(
        fetcher,
        allowed,
        options.auth_jwks_refresh,
        options.auth_jwks_cooldown,
        options.auth_issuer,
        options.auth_jwks_url,
    )
    assert options.auth_issuer and options.auth_audience  # nosec B101  # config_problem checked them
    return Verifier(keys, options.auth_issuer, options.auth_audience, allowed, options.auth_leeway)


class TokenCache:
    """Verified tokens by their bytes, at most ``size``: lookups take no lock (a dict's get is
    atomic), additions and removals take one. When full, the expired entries go, then the
    older half."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: dict[bytes, Verified] = {}
        self._lock = threading.Lock()

    def put(self, token: bytes, verified: Verified) -> None:
        with self._lock:
            entries = self.entries
            if len(entries) >= self.size:
                now = time.time()
                kept = [(t, v) for t, v in entries.items() if v.expires > now]
                if len(kept) >= self.size:
                    kept = kept[len(kept) // 2 :]  # insertion order: the older half goes
                entries.clear()  # in place: Gate holds entries.get
                entries.update(kept)
            entries[token] = verified

    def drop_keys(self, kids: set[str]) -> None:
        """Forget the tokens verified by these keys: they left the provider's key set."""
        with self._lock:
            for token in [t for t, v in self.entries.items() if v.kid in kids]:
                del self.entries[token]


class Gate:
    """The check before every /api/v1/ lookup (``check``, chosen by the mode): it returns when
    the caller may go on, having set ``request.caller``, and raises HTTPError otherwise."""

    def __init__(
        self,
        mode: str,
        tokens: StaticToken,
        verifier: Verifier | None,
        metrics: Metrics,
        unavailable: Callable[[str], HTTPError],
        scope: str | None = None,
        cache_size: int = 10000,
    ) -> None:
        if mode != TOKEN and verifier is None:
            raise ValueError(f"AUTH_MODE={mode} needs a verifier")
        self.tokens = tokens
        self.verifier = verifier
        self.metrics = metrics
        self.unavailable = unavailable
        self.scope = scope
        self.cache = TokenCache(cache_size)
        self.cached = self.cache.entries.get
        self.check: Callable[[Request], None] = {TOKEN: self.static, JWT: self.jwt, BOTH: self.either}[mode]
        self.mode = mode
        metrics.expect_auth_refusals(REASONS)
        if verifier is not None:
            from accesstoken import Refused  # loaded already: the verifier is its module's

            self.refused = Refused
            verifier.keys.counted = metrics.key_set_fetch
            verifier.keys.removed = self.cache.drop_keys
            self.insufficient = b'WWW-Authenticate: Bearer realm="%s", error="insufficient_scope", scope="%s"\r\n' % (
                REALM.encode(),
                (scope or "").encode(),
            )

    def refuse(self, reason: str, extra: bytes, message: str | None = None, status: int = 401) -> HTTPError:
        self.metrics.auth_refused(reason)
        return HTTPError(status, message, extra=extra)

    # -- the checks, one per mode -------------------------------------------
    def static(self, request: Request) -> None:
        token = self.tokens.token
        if token is None:
            # No token could be read: refuse the API rather than serve it unauthenticated.
            raise self.unavailable(NO_TOKEN_YET)
        given = request.token
        if not given:
            raise self.refuse("missing", BEARER_CHALLENGE)
        if not hmac.compare_digest(given, token):
            raise self.refuse("wrong_token", INVALID_TOKEN)
        request.caller = STATIC_CALLER

    def jwt(self, request: Request) -> None:
        given = request.token
        if not given:
            raise self.refuse("missing", BEARER_CHALLENGE)
        if not request.bearer:  # RFC 6750 2.1: x-access-token is the static token's alone
            raise self.refuse("not_bearer", NOT_BEARER, "Unauthorized: send the access token in Authorization: Bearer")
        verified = self.cached(given)
        if verified is None or verified.expires <= time.time():
            verified = self.verify(given)
        if self.scope is not None and self.scope not in verified.scopes:
            raise self.refuse("insufficient_scope", self.insufficient, f"Forbidden: needs the scope {self.scope}", 403)
        request.caller = verified.caller

    def either(self, request: Request) -> None:
        given, token = request.token, self.tokens.token
        if given and token is not None and hmac.compare_digest(given, token):
            request.caller = STATIC_CALLER
        elif given and given.count(b".") != 2 and token is None:
            raise self.unavailable(NO_TOKEN_YET)  # not a JWT, and no static token to judge it by
        elif given and given.count(b".") != 2:
            raise self.refuse("wrong_token", INVALID_TOKEN)
        else:
            self.jwt(request)

    # -- a token not in the cache ---------------------------------------------
    def verify(self, token: bytes) -> Verified:
        assert self.verifier is not None  # nosec B101  # the JWT modes have one (__init__)
        keys = self.verifier.keys
        if not keys.fetched:
            raise self.unavailable(NO_KEYS_YET + keys.problem)
        try:
            verified = self.verifier.verify(token)
        except self.refused as refused:
            raise self.refuse(
                refused.reason, challenge(refused.description), f"Unauthorized: {refused.description}"
            ) from None
        if verified.expires > time.time():  # else refused as expired already
            self.cache.put(token, verified)
        return verified

    def not_ready(self) -> str | None:
        """Why the API cannot be served, for /readyz; None when it can."""
        if self.mode != JWT and self.tokens.token is None:
            return f"Service Unavailable: {self.tokens.problem}" if self.tokens.problem else NO_TOKEN_YET
        if self.verifier is not None and not self.verifier.keys.fetched:
            return "Service Unavailable: " + NO_KEYS_YET + self.verifier.keys.problem
        return None
