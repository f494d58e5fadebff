"""JWT bearer authentication (docs/management.md, docs/security.md).

Public API::

    settings = JwtSettings.from_mapping(config["jwt"], os.environ)   # JwtSettingsError if bad
    verifier = JwtVerifier(settings)
    if looks_like_jwt(credential):
        user = verifier.verify(credential)       # JwtUser, or raises errors.InvalidToken (401)
        user.user_id, user.account_id, user.is_admin, user.claims
        user.may_use("proj_support_bot")         # token grants + static [jwt.grants]

The `[jwt]` configuration section::

    [jwt]
    issuer = "https://idp.example.com/"   # optional; str or list; checks `iss`
    audience = "policy-gateway"           # optional; str or list; checks `aud`
    leeway = 30                           # seconds of clock skew for exp/nbf/iat (default 0)
    require_exp = true                    # refuse tokens without `exp` (default true)
    account_claim = "org_id"              # claim naming the gateway account (default org_id)
    default_account = "acct_123"          # optional: account for tokens without that claim
    projects_claim = "projects"           # list of project ids, or "*" (default projects)
    admin_claim = "roles"                 # claim holding roles (default roles) ...
    admin_role = "admin"                  # ... of which this one makes an admin of its account
    super_admin_role = "gateway-operator" # optional: this role manages every account
    subject_claim = "sub"                 # claim naming the quota subject (default sub)

    [[jwt.keys]]                          # one or more; a single key may instead be written
    kid = "idp-2024"                      # directly in [jwt] (algorithm = ..., secret_env = ...)
    algorithm = "RS256"                   # HS256, RS256 or ES256 only
    public_key_file = "/etc/gateway/idp.pem"

    [[jwt.keys]]
    algorithm = "HS256"
    secret_env = "GATEWAY_JWT_SECRET"     # the NAME of the variable holding the secret

    [jwt.grants]                          # static grants by `sub`, added to the token's own
    "alice" = ["proj_a", "proj_b"]
    "ops-bot" = "*"

Key material is given exactly one way: HS256 keys take `secret`, `secret_file` or `secret_env`;
RS256/ES256 keys take `public_key`, `public_key_file` or `public_key_env` (PEM public key, PEM
certificate, or a private key, of which only the public half is kept). Claim names may be dotted
paths into nested objects (`realm_access.roles`) when no claim has the literal dotted name.

Security decisions, and why:
- The token never chooses the algorithm. A `kid` selects exactly one key, whose configured
  algorithm must equal the header's `alg`; without `kid` only keys configured for that `alg` are
  tried; and `jwt.decode` always gets `algorithms=[key.algorithm]`. So `alg: none` and algorithm
  confusion (an HS256 token "signed" with an RSA/EC public key) cannot reach a verifier that would
  accept them.
- Every key is read and parsed once, in `from_mapping`: the request path does no file or
  environment reads and no PEM parsing. Only the public half of a key is kept in memory.
- Weak keys are refused at startup (HMAC secret under 32 bytes, RSA under 2048 bits) rather than
  warned about on every request.
- `"*"` grants every project *of the user's account*; the caller of `may_use` must still check
  that the project belongs to `account_id`. The admin role does not grant projects by itself.
"""

from __future__ import annotations

import binascii
import json
import re
from base64 import urlsafe_b64decode
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from gateway.errors import InvalidToken, JwtSettingsError
from gateway.identity.jwt_settings import (
    ALGORITHMS,
    ALL_PROJECTS,
    AllProjects,
    JwtSettings,
    ProjectGrants,
    VerificationKey,
    _grant_value,
)

if TYPE_CHECKING:
    import jwt

__all__ = [
    "ALGORITHMS",
    "ALL_PROJECTS",
    "MAX_TOKEN_LENGTH",
    "AllProjects",
    "JwtSettings",
    "JwtSettingsError",
    "JwtUser",
    "JwtVerifier",
    "ProjectGrants",
    "VerificationKey",
    "looks_like_jwt",
]

#: Longer credentials are refused before any parsing; real tokens are a few KB at most.
MAX_TOKEN_LENGTH = 16 * 1024
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*={0,2}")

@dataclass(frozen=True, slots=True)
class JwtUser:
    """An authenticated JWT caller (docs/management.md): `user_id` is the `sub` claim."""

    user_id: str
    account_id: str
    #: Token grants united with static `[jwt.grants]`; `ALL_PROJECTS` for a `"*"` grant.
    granted_projects: ProjectGrants
    is_admin: bool
    claims: Mapping[str, Any] = field(compare=False, repr=False)
    #: Holds the configured super-admin role: manages every account, not only its own.
    is_super_admin: bool = False
    #: The quota subject: the `subject_claim` value (default `sub`, the user id).
    subject: str = ""

    def may_use(self, project_id: str) -> bool:
        """Whether the grants cover `project_id`. Does not check the project's account."""
        if self.granted_projects is ALL_PROJECTS:
            return True
        return project_id in self.granted_projects


class JwtVerifier:
    """Verifies bearer JWTs against the configured keys. Pure CPU: safe on the request path."""

    def __init__(self, settings: JwtSettings) -> None:
        import jwt  # here: PyJWT and cryptography cost about 9 MB a worker without JWT

        self.settings = settings
        self._by_kid = {key.kid: key for key in settings.keys if key.kid is not None}
        self._by_algorithm: dict[str, tuple[VerificationKey, ...]] = {
            alg: tuple(k for k in settings.keys if k.algorithm == alg) for alg in ALGORITHMS
        }
        self._decoder = jwt.PyJWT(options={
            "require": ["exp"] if settings.require_exp else [],
            "verify_aud": settings.audience is not None,
            "enforce_minimum_key_length": True,
        })

    def verify(self, token: str) -> JwtUser:
        """Verify signature and registered claims, and build the user; raise `InvalidToken`."""
        claims = self._verified_claims(token)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip():
            raise InvalidToken("The token has no `sub` claim naming the user.")
        return JwtUser(
            user_id=sub,
            account_id=self._account(claims),
            granted_projects=self._grants(sub, claims),
            is_admin=self._has_role(claims, self.settings.admin_role),
            claims=MappingProxyType(claims),
            is_super_admin=(self.settings.super_admin_role is not None
                            and self._has_role(claims, self.settings.super_admin_role)),
            subject=self._subject(sub, claims),
        )

    def _verified_claims(self, token: str) -> dict[str, Any]:
        import jwt

        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("Malformed token: not a JWT of acceptable size.")
        # Only to choose the key; PyJWT parses and checks the whole token again in `decode`.
        header = _unverified_header(token)
        if header is None:
            raise InvalidToken("Malformed token: expected three base64url segments "
                               "with a JSON header.")
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm.lower() == "none":
            raise InvalidToken("Unsigned tokens (alg 'none') are not accepted.")
        if algorithm not in ALGORITHMS:
            raise InvalidToken(f"Token algorithm {algorithm!r} is not accepted; "
                               f"this gateway accepts {', '.join(ALGORITHMS)}.")
        candidates = self._candidates(header.get("kid"), algorithm)
        for key in candidates:
            try:
                return self._decoder.decode(
                    token, key=key.key, algorithms=[key.algorithm],
                    issuer=self.settings.issuer, audience=self.settings.audience,
                    leeway=self.settings.leeway,
                )
            except jwt.InvalidSignatureError:
                continue  # another key of the same algorithm may have signed it
            except jwt.PyJWTError as exc:
                raise InvalidToken(self._explain(exc)) from None
        raise InvalidToken("Token signature verification failed.")

    def _candidates(self, kid: Any, algorithm: str) -> tuple[VerificationKey, ...]:
        if kid is not None:
            if not isinstance(kid, str):
                raise InvalidToken("Malformed token: the `kid` header must be a string.")
            key = self._by_kid.get(kid)
            if key is None:
                raise InvalidToken(f"Token key id (kid) {kid!r} is not a configured key.")
            if key.algorithm != algorithm:
                raise InvalidToken(f"Token algorithm {algorithm} does not match key {kid!r}, "
                                   f"which is configured for {key.algorithm}.")
            return (key,)
        keys = self._by_algorithm[algorithm]
        if not keys:
            configured = sorted({k.algorithm for k in self.settings.keys})
            raise InvalidToken(f"Token algorithm {algorithm} is not configured; "
                               f"configured: {', '.join(configured)}.")
        return keys

    def _explain(self, exc: jwt.PyJWTError) -> str:
        import jwt

        if isinstance(exc, jwt.ExpiredSignatureError):
            return "Token has expired (exp)."
        if isinstance(exc, jwt.ImmatureSignatureError):
            return f"Token is not yet valid ({exc})."
        if isinstance(exc, jwt.MissingRequiredClaimError):
            return f"Token is missing the required `{exc.claim}` claim."
        if isinstance(exc, jwt.InvalidIssuerError):
            return f"Token issuer (iss) is not accepted; expected {self.settings.issuer!r}."
        if isinstance(exc, jwt.InvalidAudienceError):
            return f"Token audience (aud) is not accepted; expected {self.settings.audience!r}."
        if isinstance(exc, jwt.DecodeError):
            return f"Malformed token: {exc}."
        return f"Invalid token: {exc}."

    def _account(self, claims: Mapping[str, Any]) -> str:
        value = _claim(claims, self.settings.account_claim)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and value.strip():
            return value
        if value is None and self.settings.default_account is not None:
            return self.settings.default_account
        raise InvalidToken(f"The token has no usable `{self.settings.account_claim}` claim "
                           f"naming the account.")

    def _grants(self, sub: str, claims: Mapping[str, Any]) -> ProjectGrants:
        raw = _claim(claims, self.settings.projects_claim)
        from_token = frozenset[str]() if raw is None else _grant_value(raw)
        if from_token is None:
            raise InvalidToken(f"The `{self.settings.projects_claim}` claim must be a list of "
                               f"project ids or '*'.")
        from_config = self.settings.grants.get(sub, frozenset())
        if isinstance(from_token, frozenset) and isinstance(from_config, frozenset):
            return from_token | from_config
        return ALL_PROJECTS

    def _has_role(self, claims: Mapping[str, Any], role: str) -> bool:
        roles = _claim(claims, self.settings.admin_claim)
        if isinstance(roles, str):
            roles = roles.split()  # OAuth `scope` style: space-separated
        return isinstance(roles, list) and role in roles

    def _subject(self, sub: str, claims: Mapping[str, Any]) -> str:
        if self.settings.subject_claim == "sub":
            return sub
        value = _claim(claims, self.settings.subject_claim)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise InvalidToken(f"The token has no usable `{self.settings.subject_claim}` claim "
                               f"naming the quota subject.")
        return value


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    """The claim `name`, or the nested value at its dotted path (`realm_access.roles`)."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def looks_like_jwt(credential: str) -> bool:
    """Whether a credential is shaped like a JWT (JWS compact form with an `alg` header), so the
    request path answers it as a token (`invalid_token`) rather than as an API key. Says nothing
    about validity: an unsigned `alg: none` token still looks like a JWT, and is then refused."""
    if len(credential) > MAX_TOKEN_LENGTH:
        return False
    header = _unverified_header(credential)
    return header is not None and isinstance(header.get("alg"), str)


def _unverified_header(token: str) -> dict[str, Any] | None:
    """The JOSE header of a compact JWS, untrusted; None when the token does not have that shape
    (three base64url segments, the first two non-empty, the first a JSON object)."""
    if token.count(".") != 2:
        return None
    header_segment, payload_segment, signature_segment = token.split(".")
    if not header_segment or not payload_segment:
        return None
    if not all(_SEGMENT.fullmatch(s) for s in (header_segment, payload_segment,
                                                signature_segment)):
        return None
    try:
        header = json.loads(urlsafe_b64decode(header_segment.rstrip("=") + "=="))
    except (binascii.Error, ValueError, RecursionError):
        return None
    return header if isinstance(header, dict) else None
