"""The `[jwt]` configuration section, parsed and its keys loaded once at startup.

See `gateway.identity.jwt` for the section's reference and the security decisions; this module
holds only the parsing, so that verification (the request path) stays small.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gateway.errors import JwtSettingsError

ALGORITHMS = ("HS256", "RS256", "ES256")
_MIN_HMAC_SECRET_BYTES = 32  # RFC 7518 §3.2: at least the hash output size

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
     "projects_claim", "admin_claim", "admin_role", "super_admin_role", "subject_claim",
     "grants"}
)




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
    #: A role (in `admin_claim`) that manages every account; None: no token crosses accounts.
    super_admin_role: str | None = None
    #: Claim that names the quota subject of a JWT caller; `X-Policy-User` cannot override it.
    subject_claim: str = "sub"
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
            super_admin_role=(None if data.get("super_admin_role") is None else
                              _name("jwt.super_admin_role", data["super_admin_role"])),
            subject_claim=_name("jwt.subject_claim", data.get("subject_claim", "sub")),
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
    # Imported here: PyJWT and cryptography cost about 9 MB a worker that has no JWT keys.
    import jwt
    from cryptography import x509
    from jwt.algorithms import get_default_algorithms

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
