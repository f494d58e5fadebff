"""JWT bearer authentication (SPEC §2 "JWT user", §3, §10 admin role).

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
    admin_role = "admin"                  # ... of which this one makes an admin (default admin)

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
import enum
import json
import re
from base64 import urlsafe_b64decode
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jwt
from cryptography import x509
from jwt.algorithms import get_default_algorithms

from gateway.errors import InvalidToken

ALGORITHMS = ("HS256", "RS256", "ES256")
#: Longer credentials are refused before any parsing; real tokens are a few KB at most.
MAX_TOKEN_LENGTH = 16 * 1024
_MIN_HMAC_SECRET_BYTES = 32  # RFC 7518 §3.2: at least the hash output size
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*={0,2}")

_SOURCES = {
    "HS256": ("secret", "secret_file", "secret_env"),
    "RS256": ("public_key", "public_key_file", "public_key_env"),
    "ES256": ("public_key", "public_key_file", "public_key_env"),
}
_KEY_FIELDS = frozenset(
    {"kid", "algorithm", "secret", "secret_file", "secret_env",
     "public_key", "public_key_file", "public_key_env"}
)
_SETTINGS_FIELDS = frozenset(
    {"keys", "issuer", "audience", "leeway", "require_exp", "account_claim", "default_account",
     "projects_claim", "admin_claim", "admin_role", "grants"}
)


class JwtSettingsError(ValueError):
    """The `[jwt]` configuration is invalid (unknown algorithm, missing secret, unreadable key
    file, weak key, ...). Caused by the operator; `field` names the setting to fix."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name


class AllProjects(enum.Enum):
    """A `"*"` grant: every project of the user's account."""

    ALL = "*"


ALL_PROJECTS = AllProjects.ALL
ProjectGrants = frozenset[str] | AllProjects


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One parsed key: HMAC secret bytes, or a `cryptography` public key object."""

    algorithm: str
    key: Any = field(repr=False)
    kid: str | None = None


@dataclass(frozen=True, slots=True)
class JwtSettings:
    """The parsed `[jwt]` section (see the module docstring); keys are already loaded."""

    keys: tuple[VerificationKey, ...]
    issuer: str | tuple[str, ...] | None = None
    audience: str | tuple[str, ...] | None = None
    leeway: float = 0.0
    require_exp: bool = True
    account_claim: str = "org_id"
    default_account: str | None = None
    projects_claim: str = "projects"
    admin_claim: str = "roles"
    admin_role: str = "admin"
    grants: Mapping[str, ProjectGrants] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], env: Mapping[str, str]) -> JwtSettings:
        """Parse the `[jwt]` section, reading every key file and variable now (never later)."""
        unknown = set(data) - _SETTINGS_FIELDS - _KEY_FIELDS
        if unknown:
            raise JwtSettingsError("jwt", f"unknown setting(s) {sorted(unknown)}; "
                                          f"known: {sorted(_SETTINGS_FIELDS | _KEY_FIELDS)}")
        inline_key = {k: v for k, v in data.items() if k in _KEY_FIELDS}
        keys: tuple[VerificationKey, ...]
        if inline_key and "keys" in data:
            raise JwtSettingsError("jwt.keys", "give either [[jwt.keys]] tables or one key's "
                                               f"fields directly in [jwt], not both ({sorted(inline_key)})")
        if inline_key:
            keys = (_parse_key("jwt", inline_key, env),)
        else:
            specs = data.get("keys", [])
            if not isinstance(specs, Sequence) or isinstance(specs, str):
                raise JwtSettingsError("jwt.keys", "must be a list of key tables ([[jwt.keys]])")
            keys = tuple(_parse_key(f"jwt.keys[{i}]", spec, env) for i, spec in enumerate(specs))
        if not keys:
            raise JwtSettingsError("jwt.keys", "at least one verification key is required")
        kids = [k.kid for k in keys if k.kid is not None]
        if len(kids) != len(set(kids)):
            raise JwtSettingsError("jwt.keys", f"duplicate kid in {kids}")

        leeway = data.get("leeway", 0)
        if isinstance(leeway, bool) or not isinstance(leeway, int | float) or leeway < 0:
            raise JwtSettingsError("jwt.leeway", f"must be a non-negative number of seconds, "
                                                 f"not {leeway!r}")
        require_exp = data.get("require_exp", True)
        if not isinstance(require_exp, bool):
            raise JwtSettingsError("jwt.require_exp", f"must be true or false, not {require_exp!r}")
        default_account = data.get("default_account")
        if default_account is not None:
            default_account = _name("jwt.default_account", default_account)
        return cls(
            keys=keys,
            issuer=_one_or_many("jwt.issuer", data.get("issuer")),
            audience=_one_or_many("jwt.audience", data.get("audience")),
            leeway=float(leeway),
            require_exp=require_exp,
            account_claim=_name("jwt.account_claim", data.get("account_claim", "org_id")),
            default_account=default_account,
            projects_claim=_name("jwt.projects_claim", data.get("projects_claim", "projects")),
            admin_claim=_name("jwt.admin_claim", data.get("admin_claim", "roles")),
            admin_role=_name("jwt.admin_role", data.get("admin_role", "admin")),
            grants=MappingProxyType(_parse_grants(data.get("grants", {}))),
        )


def _name(field_name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise JwtSettingsError(field_name, f"must be a non-empty string, not {value!r}")
    return value


def _one_or_many(field_name: str, value: Any) -> str | tuple[str, ...] | None:
    if value is None or isinstance(value, str):
        return _name(field_name, value) if value is not None else None
    if isinstance(value, Sequence) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise JwtSettingsError(field_name, f"must be a string or a non-empty list of strings, "
                                       f"not {value!r}")


def _parse_grants(raw: Any) -> dict[str, ProjectGrants]:
    if not isinstance(raw, Mapping):
        raise JwtSettingsError("jwt.grants", "must be a table of user id = [project ids] or '*'")
    grants: dict[str, ProjectGrants] = {}
    for user_id, projects in raw.items():
        parsed = _grant_value(projects)
        if parsed is None:
            raise JwtSettingsError(f"jwt.grants.{user_id}",
                                   f"must be a list of project ids or '*', not {projects!r}")
        grants[str(user_id)] = parsed
    return grants


def _grant_value(value: Any) -> ProjectGrants | None:
    """A grant as configured or claimed: `"*"` or a list of ids (which may contain `"*"`)."""
    if value == "*":
        return ALL_PROJECTS
    if isinstance(value, list | tuple) and all(isinstance(p, str) and p for p in value):
        return ALL_PROJECTS if "*" in value else frozenset(value)
    return None


def _parse_key(where: str, spec: Any, env: Mapping[str, str]) -> VerificationKey:
    if not isinstance(spec, Mapping):
        raise JwtSettingsError(where, "must be a table with `algorithm` and key material")
    unknown = set(spec) - _KEY_FIELDS
    if unknown:
        raise JwtSettingsError(where, f"unknown field(s) {sorted(unknown)}; "
                                      f"known: {sorted(_KEY_FIELDS)}")
    algorithm = spec.get("algorithm")
    if algorithm not in ALGORITHMS:
        raise JwtSettingsError(f"{where}.algorithm",
                               f"must be one of {', '.join(ALGORITHMS)}, not {algorithm!r}")
    kid = spec.get("kid")
    if kid is not None:
        kid = _name(f"{where}.kid", kid)
    inline, file_field, env_field = _SOURCES[algorithm]
    wrong = sorted(f for f in ("secret", "secret_file", "secret_env", "public_key",
                               "public_key_file", "public_key_env")
                   if f in spec and f not in _SOURCES[algorithm])
    if wrong:
        raise JwtSettingsError(f"{where}.{wrong[0]}", f"does not apply to {algorithm} keys; "
                                                      f"use {inline}, {file_field} or {env_field}")
    given = [f for f in (inline, file_field, env_field) if f in spec]
    if len(given) != 1:
        raise JwtSettingsError(where, f"give exactly one of {inline}, {file_field} or "
                                      f"{env_field} for an {algorithm} key (got {given or 'none'})")
    source = given[0]
    material = _read_material(f"{where}.{source}", source, spec[source], env)
    return VerificationKey(algorithm=algorithm, key=_load_key(f"{where}.{source}", algorithm,
                                                              material), kid=kid)


def _read_material(field_name: str, source: str, value: Any, env: Mapping[str, str]) -> bytes:
    if not isinstance(value, str) or not value:
        raise JwtSettingsError(field_name, "must be a non-empty string")
    if source.endswith("_env"):
        if value not in env:
            raise JwtSettingsError(field_name, f"environment variable {value} is not set")
        if not env[value]:
            raise JwtSettingsError(field_name, f"environment variable {value} is empty")
        return env[value].encode("utf-8")
    if source.endswith("_file"):
        try:
            data = Path(value).read_bytes()
        except OSError as exc:
            raise JwtSettingsError(field_name, f"cannot read key file {value}: "
                                               f"{exc.strerror or exc}") from exc
        # Editors and `echo` add a final newline that is not part of the secret.
        return data.rstrip(b"\r\n")
    return value.encode("utf-8")


def _load_key(field_name: str, algorithm: str, material: bytes) -> Any:
    if algorithm == "HS256" and len(material) < _MIN_HMAC_SECRET_BYTES:
        raise JwtSettingsError(field_name, f"HS256 secret is {len(material)} bytes; at least "
                                           f"{_MIN_HMAC_SECRET_BYTES} are required (RFC 7518 §3.2)")
    if material.lstrip().startswith(b"-----BEGIN CERTIFICATE-----") and algorithm != "HS256":
        try:
            material_or_key: Any = x509.load_pem_x509_certificate(material).public_key()
        except ValueError as exc:
            raise JwtSettingsError(field_name, f"invalid PEM certificate: {exc}") from exc
    else:
        material_or_key = material
    algorithm_impl = get_default_algorithms()[algorithm]
    try:
        key = algorithm_impl.prepare_key(material_or_key)
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        kind = "secret" if algorithm == "HS256" else "public key"
        raise JwtSettingsError(field_name, f"not a usable {algorithm} {kind}: {exc}") from exc
    if algorithm != "HS256" and hasattr(key, "private_bytes"):
        key = key.public_key()  # verification needs only the public half; keep no secret around
    weakness = algorithm_impl.check_key_length(key)
    if weakness:
        raise JwtSettingsError(field_name, weakness)
    return key


@dataclass(frozen=True, slots=True)
class JwtUser:
    """An authenticated JWT caller (SPEC §2): `user_id` is the `sub` claim."""

    user_id: str
    account_id: str
    #: Token grants united with static `[jwt.grants]`; `ALL_PROJECTS` for a `"*"` grant.
    granted_projects: ProjectGrants
    is_admin: bool
    claims: Mapping[str, Any] = field(compare=False, repr=False)

    def may_use(self, project_id: str) -> bool:
        """Whether the grants cover `project_id`. Does not check the project's account."""
        if self.granted_projects is ALL_PROJECTS:
            return True
        return project_id in self.granted_projects


class JwtVerifier:
    """Verifies bearer JWTs against the configured keys. Pure CPU: safe on the request path."""

    def __init__(self, settings: JwtSettings) -> None:
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
            is_admin=self._is_admin(claims),
            claims=MappingProxyType(claims),
        )

    def _verified_claims(self, token: str) -> dict[str, Any]:
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

    def _is_admin(self, claims: Mapping[str, Any]) -> bool:
        roles = _claim(claims, self.settings.admin_claim)
        if isinstance(roles, str):
            roles = roles.split()  # OAuth `scope` style: space-separated
        return isinstance(roles, list) and self.settings.admin_role in roles


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
