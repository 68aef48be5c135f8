"""The rules an OAuth 2.0 JWT access token must pass (RFC 7519, 8725, 9068), with PyJWT.

Imported only when AUTH_MODE is ``jwt`` or ``both`` (auth.py). ``Verifier.verify`` takes the
token's bytes and gives who called, the scopes and until when it holds, or raises ``Refused``
with a reason (a label of ``/metrics``) and a description that helps the caller and not an
attacker: never key material, never an internal error.

The signature is verified with the key the header's ``kid`` names, from the provider's key set
(jwks.py), for an algorithm on the allow-list that this key's type can verify: never the
algorithm the header asks for alone, so ``alg: none`` and HS256 signed with the public key
as its secret are refused. Then ``exp`` (required), ``nbf`` and ``iat`` (within the leeway),
``iss`` (equal to AUTH_ISSUER) and ``aud`` (containing AUTH_AUDIENCE). RFC 9068 tokens
(``typ: at+jwt``) and plain JWTs are accepted; a JWT typed as something else (an ID token
typed, a logout token) is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import jwt

from jwks import KeySet

# The header's typ of an access token: RFC 9068's, or a plain JWT's (most providers'), or none.
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt", "jwt"})
# The caller's name in the access log: visible ASCII, no spaces, bounded.
UNPRINTABLE = re.compile(r"[^\x21-\x7e]")
CALLER_LENGTH = 100

# PyJWT's errors, most specific first, as (reason, description).
ERRORS: tuple[tuple[type[Exception], str, str], ...] = (
    (jwt.ExpiredSignatureError, "expired", "token expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid", "token not yet valid"),
    (jwt.InvalidAudienceError, "wrong_audience", "wrong audience"),
    (jwt.InvalidIssuerError, "wrong_issuer", "wrong issuer"),
    (jwt.InvalidSignatureError, "bad_signature", "signature does not verify"),
    (jwt.InvalidAlgorithmError, "algorithm", "signature algorithm not accepted"),
    (jwt.InvalidKeyError, "algorithm", "signature algorithm not accepted"),
    (jwt.InvalidIssuedAtError, "malformed", "iat is not a number"),
    (jwt.DecodeError, "malformed", "the token cannot be decoded"),
)


class Refused(Exception):
    """A token refused: ``reason`` for /metrics, ``description`` for the caller."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.description = description


@dataclass(frozen=True, slots=True)
class Verified:
    """What the request path keeps of a verified token (auth.py caches it by the token)."""

    caller: str  # client_id, else azp, else sub: for the access log
    scopes: frozenset[str]
    expires: float  # exp plus the leeway, seconds since the epoch
    kid: str | None  # the key that verified it: the entry dies when the key leaves the set


class Verifier:
    def __init__(self, keys: KeySet, issuer: str, audience: str, algorithms: frozenset[str], leeway: float) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.algorithms = algorithms
        self.leeway = leeway

    def verify(self, token: bytes) -> Verified:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Refused("malformed", "the token is not a JWT") from None
        alg, typ, kid = header.get("alg"), header.get("typ"), header.get("kid")
        if alg not in self.algorithms:
            raise Refused("algorithm", "signature algorithm not accepted")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES):
            raise Refused("wrong_type", "not an access token (typ)")
        if kid is not None and not isinstance(kid, str):
            raise Refused("malformed", "kid is not a string")
        key = self.keys.find(kid)
        if key is None:
            raise Refused("unknown_key", "signing key not known")
        if alg not in key.algorithms:
            raise Refused("algorithm", "signature algorithm not accepted for this key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp"]},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise Refused("missing_claim", f"required claim missing: {exc.claim}") from None
        except jwt.PyJWTError as exc:
            for kind, reason, description in ERRORS:
                if isinstance(exc, kind):
                    raise Refused(reason, description) from None
            raise Refused("invalid", "invalid token") from None
        return Verified(caller_of(claims), scopes_of(claims), float(claims["exp"]) + self.leeway, kid)


def caller_of(claims: dict) -> str:
    """Who called, for the access log: the client (RFC 9068's client_id, else the authorized
    party azp), else the subject; printable, bounded."""
    for claim in ("client_id", "azp", "sub"):
        value = claims.get(claim)
        if isinstance(value, str) and value:
            return UNPRINTABLE.sub("?", value[:CALLER_LENGTH])
    return "?"


def scopes_of(claims: dict) -> frozenset[str]:
    """RFC 9068's ``scope`` (space-separated), or ``scp`` (a list, or a string) as Hydra and
    Entra ID send it."""
    found: set[str] = set()
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(v for v in value if isinstance(v, str))
    return frozenset(found)
