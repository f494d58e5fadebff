"""Gateway configuration: one TOML file plus environment variables for secrets (SPEC §12).

Everything has a default, so `Config.load(None)` runs out of the box: SQLite under `./data`,
the example policies, and the built-in echo upstream for any provider without an API key.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

OPENAI = "openai"
ANTHROPIC = "anthropic"
PROVIDER_KINDS = (OPENAI, ANTHROPIC)

_DEFAULT_BASE_URLS = {OPENAI: "https://api.openai.com/v1", ANTHROPIC: "https://api.anthropic.com"}
_ENV_PREFIX = {OPENAI: "OPENAI", ANTHROPIC: "ANTHROPIC"}


class ConfigError(Exception):
    """The configuration file or environment is invalid. Caused by the operator: fix the file."""


@dataclass(frozen=True, slots=True)
class Provider:
    """One upstream. `kind` says which wire APIs it serves: openai (chat, responses, models) or
    anthropic (messages, count_tokens). Without an `api_key` it is answered by the local echo."""

    name: str
    kind: str
    base_url: str
    api_key: str | None = None

    @property
    def is_echo(self) -> bool:
        return not self.api_key


@dataclass(frozen=True, slots=True)
class Route:
    """Send requests whose model matches `model` (exact or glob) to `provider`."""

    model: str
    provider: str

    def matches(self, model: str) -> bool:
        return fnmatch.fnmatchcase(model, self.model)


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 10.0
    #: Longest wait for the upstream's response headers or for the next stream frame.
    idle: float = 120.0
    #: Longest time one upstream exchange may take, stream included.
    total: float = 900.0


@dataclass(frozen=True, slots=True)
class Config:
    database_path: str = "data/gateway.db"
    max_body_bytes: int = 10 * 1024 * 1024
    timeouts: Timeouts = field(default_factory=Timeouts)
    providers: Mapping[str, Provider] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    #: Default provider for each kind, used when no route matches.
    default_provider: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    #: Seconds in-flight requests and streams get to finish after SIGTERM/SIGINT; streams
    #: still running then end with the API's error frame (docs/operations.md).
    shutdown_grace: float = 20.0
    #: Level of the JSON log lines on stderr (`DEBUG` adds probes and scrapes).
    log_level: str = "INFO"
    #: Upstream connection pool size per worker.
    max_connections: int = 512
    #: Directory of `.pol` / `.json` policies; the one source of truth for policies.
    policies_dir: str = "policies"
    #: Categories refused on every surface, for every project (SPEC §5.5).
    always_blocked_categories: tuple[str, ...] = ("self-harm/instructions", "sexual/minors")
    #: The raw `[jwt]` section, parsed by `gateway.identity.jwt.JwtSettings.from_mapping`.
    jwt: Mapping[str, Any] = field(default_factory=dict)
    #: The management API's admin token (from `[admin] token_env`, default GATEWAY_ADMIN_TOKEN).
    admin_token: str | None = None
    #: The raw `[moderation]` section, parsed by `gateway.moderation.ModerationSettings`.
    moderation: Mapping[str, Any] = field(default_factory=dict)
    #: Raw sections owned by later components: `[quotas]`, `[events]`.
    quotas: Mapping[str, Any] = field(default_factory=dict)
    events: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
             ) -> Config:
        """Read `path` (TOML) if given, then fill provider secrets from `env`."""
        env = os.environ if env is None else env
        data: dict[str, Any] = {}
        if path is not None:
            try:
                data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read configuration {path}: {exc}") from exc
        return cls.from_mapping(data, env)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        try:
            return _build(data, env)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"invalid configuration: {exc}") from exc

    def with_overrides(self, **changes: Any) -> Config:
        return replace(self, **changes)

    def provider_for(self, kind: str, model: str | None) -> Provider:
        """The provider that serves `model` on an API of `kind` (openai or anthropic)."""
        if model:
            for route in self.routes:
                provider = self.providers[route.provider]
                if provider.kind == kind and route.matches(model):
                    return provider
        return self.providers[self.default_provider[kind]]


def _build(data: Mapping[str, Any], env: Mapping[str, str]) -> Config:
    known = {"server", "database", "limits", "timeouts", "providers", "routes", "policies",
             "moderation", "jwt", "admin", "quotas", "events"}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown section(s) {sorted(unknown)}; known: {sorted(known)}")
    server = dict(data.get("server", {}))
    database = dict(data.get("database", {}))
    limits = dict(data.get("limits", {}))
    timeouts = Timeouts(**{k: float(v) for k, v in dict(data.get("timeouts", {})).items()})
    for attr in ("connect", "idle", "total"):
        if getattr(timeouts, attr) <= 0:
            raise ValueError(f"timeouts.{attr} must be positive")

    providers: dict[str, Provider] = {}
    for name, spec in dict(data.get("providers", {})).items():
        providers[name] = _provider(name, dict(spec), env)
    # Each kind gets a provider even without configuration, named after the kind, so that the
    # environment variables users already have (OPENAI_API_KEY, ...) work with no file at all.
    for kind in PROVIDER_KINDS:
        if not any(p.kind == kind for p in providers.values()):
            providers[kind] = _provider(kind, {"kind": kind}, env)
    defaults: dict[str, str] = {}
    for kind in PROVIDER_KINDS:
        named = [p.name for p in providers.values() if p.kind == kind]
        defaults[kind] = kind if kind in named else named[0]

    routes = []
    for spec in data.get("routes", []):
        route = Route(model=str(spec["model"]), provider=str(spec["provider"]))
        if route.provider not in providers:
            raise ValueError(f"route for {route.model!r} names unknown provider {route.provider!r}")
        routes.append(route)

    max_body = int(limits.get("max_body_bytes", 10 * 1024 * 1024))
    if max_body <= 0:
        raise ValueError("limits.max_body_bytes must be positive")
    if data.get("jwt"):
        from gateway.identity.jwt import JwtSettings

        JwtSettings.from_mapping(dict(data["jwt"]), env)  # fail fast: ValueError -> ConfigError
    policies = dict(data.get("policies", {}))
    from gateway.moderation.settings import ModerationSettings

    moderation = dict(data.get("moderation", {}))
    blocked = ModerationSettings.from_mapping(moderation).always_blocked  # strict: fail fast
    admin = dict(data.get("admin", {}))
    admin_token = admin.get("token") or env.get(str(admin.get("token_env",
                                                               "GATEWAY_ADMIN_TOKEN"))) or None
    return Config(
        admin_token=admin_token,
        quotas=dict(data.get("quotas", {})),
        events=dict(data.get("events", {})),
        policies_dir=str(policies.get("directory", env.get("GATEWAY_POLICIES", "policies"))),
        always_blocked_categories=tuple(blocked),
        moderation=moderation,
        jwt=dict(data.get("jwt", {})),
        database_path=str(database.get("path", env.get("GATEWAY_DATABASE", "data/gateway.db"))),
        max_body_bytes=max_body,
        timeouts=timeouts,
        providers=providers,
        routes=tuple(routes),
        default_provider=defaults,
        host=str(server.get("host", "127.0.0.1")),
        port=int(server.get("port", 8080)),
        workers=int(server.get("workers", 1)),
        shutdown_grace=_non_negative(server.get("shutdown_grace", 20.0), "server.shutdown_grace"),
        log_level=_log_level(server.get("log_level", "INFO")),
        max_connections=int(limits.get("max_upstream_connections", 512)),
    )


def _provider(name: str, spec: dict[str, Any], env: Mapping[str, str]) -> Provider:
    kind = str(spec.get("kind", name))
    if kind not in PROVIDER_KINDS:
        raise ValueError(f"provider {name!r}: kind must be one of {PROVIDER_KINDS}, not {kind!r}")
    prefix = _ENV_PREFIX[kind]
    # A provider named after its kind reads the SDKs' own variables; others name theirs.
    key_env = spec.get("api_key_env", f"{prefix}_API_KEY" if name == kind else None)
    url_env = f"{prefix}_BASE_URL" if name == kind else None
    api_key = spec.get("api_key") or (env.get(key_env) if key_env else None) or None
    base_url = spec.get("base_url") or (env.get(url_env) if url_env else None)
    base_url = str(base_url or _DEFAULT_BASE_URLS[kind]).rstrip("/")
    return Provider(name=name, kind=kind, base_url=base_url, api_key=api_key)


def _non_negative(value: Any, name: str) -> float:
    number = float(value)
    if not number >= 0:  # also refuses NaN
        raise ValueError(f"{name} must be a number of seconds, at least 0")
    return number


def _log_level(value: Any) -> str:
    level = str(value).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"server.log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, "
                         f"not {value!r}")
    return level
