"""The gateway's configuration as the code reads it: the frozen `Config` (docs/configuration.md).

Everything has a default, so `Config.load(None)` runs out of the box: SQLite under `./data`,
the example policies served from `./data/policies`, and the built-in echo upstream for any
provider without an API key. The file is read and checked by `gateway.config.loading` against
the schema of `gateway.config.schema`.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.config.loading import apply_environment, read_toml, validate
from gateway.errors import ConfigError
from gateway.storage.settings import PostgresSettings

OPENAI = "openai"
ANTHROPIC = "anthropic"
PROVIDER_KINDS = (OPENAI, ANTHROPIC)

_DEFAULT_BASE_URLS = {OPENAI: "https://api.openai.com/v1", ANTHROPIC: "https://api.anthropic.com"}
_ENV_PREFIX = {OPENAI: "OPENAI", ANTHROPIC: "ANTHROPIC"}


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
    #: Longest time a client may take to send a whole request body (then 408).
    request_body: float = 30.0


@dataclass(frozen=True, slots=True)
class Config:
    database_path: str = "data/gateway.db"
    #: `[database] url`: accounts, keys, projects, grants and policies in PostgreSQL, shared by
    #: replicas (docs/scale-out.md); None keeps them in the SQLite file.
    postgres: PostgresSettings | None = None
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
    #: Upstream connection pool size per worker: each stream holds one connection.
    max_connections: int = 4096
    #: Idle upstream connections kept for reuse per worker, and for how long (seconds).
    keepalive_connections: int = 1024
    keepalive_seconds: float = 30.0
    #: Hypercorn's listen backlog: connections the kernel queues before a worker accepts them.
    #: A burst of thousands of clients overflows hypercorn's default of 100.
    backlog: int = 4096
    #: Seconds an idle keep-alive client connection stays open.
    keep_alive_timeout: float = 75.0
    #: Directory of `.pol` / `.json` policies; the one source of truth for policies.
    policies_dir: str = "data/policies"
    #: True when `policies_dir` is the default one, which is seeded with the example policies
    #: when it does not exist yet (gateway/datadir.py).
    seed_policies: bool = True
    #: With PostgreSQL: the configured `[policies] directory`, imported into the database when
    #: it changes (GitOps); `policies_dir` is then this replica's mirror of the database.
    policies_import_dir: str | None = None
    #: Categories refused on every surface, for every project (docs/classifiers.md).
    always_blocked_categories: tuple[str, ...] = ("self-harm/instructions", "sexual/minors")
    #: The raw `[jwt]` section, parsed by `gateway.identity.jwt.JwtSettings.from_mapping`.
    jwt: Mapping[str, Any] = field(default_factory=dict)
    #: The management API's admin token (from `[admin] token_env`, default GATEWAY_ADMIN_TOKEN).
    admin_token: str | None = None
    #: Whether `serve` generates an admin token when none is configured (`[admin]
    #: generate_token`; gateway/datadir.py).
    generate_admin_token: bool = True
    #: Raw sections owned by later components: `[quotas]`, `[events]`.
    quotas: Mapping[str, Any] = field(default_factory=dict)
    events: Mapping[str, Any] = field(default_factory=dict)
    #: Requests one worker serves at once; beyond, 503 server_busy at once (body unread).
    max_concurrent_requests: int = 4096
    #: Hypercorn's read timeout: a connection that sends nothing for this long is closed. It
    #: must outlast the longest stream (a client sends nothing while it reads one), so it is
    #: `timeouts.total` + 60 s unless set, and a value below `timeouts.total` is refused.
    read_timeout: float | None = None
    #: Request headers forwarded upstream besides each API's own allowlist (lower case).
    forward_headers: tuple[str, ...] = ()
    #: The raw `[escalation]` section (gateway.policy.escalation.EscalationSettings).
    escalation: Mapping[str, Any] = field(default_factory=dict)
    #: The `inline_*` keys of `[policies]` (gateway.policy.inline.InlineBudget).
    inline_policy: Mapping[str, Any] = field(default_factory=dict)
    #: The raw `[redis]` section (gateway.redis_link.RedisSettings.from_mapping).
    redis: Mapping[str, Any] = field(default_factory=dict)
    #: Upstream MCP servers by name, from `[mcp.servers.NAME]` (gateway/mcp/settings.py).
    mcp_servers: Mapping[str, Any] = field(default_factory=dict)
    #: The raw `[moderation]` section, parsed by `gateway.moderation.ModerationSettings`.
    moderation: Mapping[str, Any] = field(default_factory=dict)

    @property
    def server_read_timeout(self) -> float:
        """Hypercorn's `read_timeout` (see `read_timeout`)."""
        return self.read_timeout if self.read_timeout is not None else self.timeouts.total + 60

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
             ) -> Config:
        """Read `path` (TOML) if given, apply the environment's overrides and check it all
        against the schema (gateway/config/schema.py); ConfigError names every problem."""
        return cls.from_mapping(read_toml(path) if path is not None else {}, env)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        merged, origins = apply_environment(data, env)
        checked = validate(merged, origins)
        try:
            return _build(checked, merged, env)
        except (TypeError, ValueError, KeyError) as exc:
            raise ConfigError(f"invalid configuration: {exc}") from exc

    @property
    def data_dir(self) -> Path:
        """The directory of the database: served policies and the generated admin token."""
        return _data_dir(self.database_path)

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


def _build(checked: Any, data: Mapping[str, Any], env: Mapping[str, str]) -> Config:
    """The `Config` of a file that passed the schema check (`checked`; `data` is the same file
    as a mapping, for the sections other modules parse)."""
    from gateway.mcp.settings import mcp_servers

    providers = _providers(checked, env)
    routes = _routes(checked, providers)
    _check_sections(data, checked, env)
    server, admin = checked.server, checked.admin
    database_path = checked.database.path
    directory = checked.policies.directory
    postgres = PostgresSettings.from_section(checked.database.model_dump(), env)
    served = directory or str(_data_dir(database_path) / "policies")
    if postgres is not None:  # policies live in the database; this replica serves a mirror
        served = str(_data_dir(database_path) / "policies-shared")
    return Config(
        admin_token=admin.token or env.get(admin.token_env) or None,
        generate_admin_token=admin.generate_token,
        quotas=dict(data.get("quotas", {})),
        events=dict(data.get("events", {})),
        policies_dir=served,
        seed_policies=directory is None and postgres is None,
        policies_import_dir=directory if postgres is not None else None,
        always_blocked_categories=tuple(checked.moderation.always_blocked),
        jwt=dict(data.get("jwt") or {}),
        database_path=database_path,
        postgres=postgres,
        max_body_bytes=checked.limits.max_body_bytes,
        timeouts=Timeouts(**checked.timeouts.model_dump()),
        providers=providers,
        routes=routes,
        default_provider=_default_providers(providers),
        host=server.host,
        port=server.port,
        workers=server.workers,
        shutdown_grace=float(server.shutdown_grace),
        log_level=server.log_level,
        max_connections=checked.limits.max_upstream_connections,
        keepalive_connections=checked.limits.upstream_keepalive_connections,
        keepalive_seconds=float(checked.limits.upstream_keepalive_seconds),
        backlog=server.backlog,
        keep_alive_timeout=float(server.keep_alive_timeout),
        max_concurrent_requests=checked.limits.max_concurrent_requests,
        read_timeout=server.read_timeout,
        forward_headers=tuple(h.lower() for h in checked.upstream.forward_headers),
        escalation=dict(data.get("escalation", {})),
        inline_policy={k: v for k, v in dict(data.get("policies", {})).items()
                       if k.startswith("inline_")},
        redis=dict(data.get("redis") or {}),
        mcp_servers=mcp_servers(dict(data.get("mcp", {})), env),
        moderation=dict(data.get("moderation", {})),
    )


def _providers(checked: Any, env: Mapping[str, str]) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    for name, spec in checked.providers.items():
        providers[name] = _provider(name, spec.model_dump(exclude_none=True), env)
    # Each kind gets a provider even without configuration, named after the kind, so that the
    # environment variables users already have (OPENAI_API_KEY, ...) work with no file at all.
    for kind in PROVIDER_KINDS:
        if not any(p.kind == kind for p in providers.values()):
            providers[kind] = _provider(kind, {"kind": kind}, env)
    return providers


def _default_providers(providers: Mapping[str, Provider]) -> dict[str, str]:
    """Each kind's provider when no route matches: the one named after the kind, else the
    first declared."""
    defaults: dict[str, str] = {}
    for kind in PROVIDER_KINDS:
        named = [p.name for p in providers.values() if p.kind == kind]
        defaults[kind] = kind if kind in named else named[0]
    return defaults


def _routes(checked: Any, providers: Mapping[str, Provider]) -> tuple[Route, ...]:
    routes = []
    for index, spec in enumerate(checked.routes):
        if spec.provider not in providers:
            raise ValueError(f"routes[{index}].provider: route for {spec.model!r} names unknown "
                             f"provider {spec.provider!r}; declared: {sorted(providers)}")
        routes.append(Route(model=spec.model, provider=spec.provider))
    return tuple(routes)


def _data_dir(database_path: str) -> Path:
    return Path("data") if database_path == ":memory:" else Path(database_path).parent


def _check_sections(data: Mapping[str, Any], checked: Any, env: Mapping[str, str]) -> None:
    """The checks of the sections other modules parse, and across sections, that the schema
    cannot express (fail fast: their ValueError becomes a ConfigError)."""
    from gateway.events.connector_settings import connector_settings
    from gateway.events.store import EventSettings
    from gateway.moderation.settings import ModerationSettings
    from gateway.policy.escalation import EscalationSettings
    from gateway.policy.inline import InlineBudget
    from gateway.quota.limits import QuotaSettings

    if data.get("jwt"):
        from gateway.identity.jwt import JwtSettings

        JwtSettings.from_mapping(dict(data["jwt"]), env)
    InlineBudget.from_mapping({k: v for k, v in dict(data.get("policies", {})).items()
                               if k.startswith("inline_")})
    EscalationSettings.from_mapping(dict(data.get("escalation", {})), env)
    ModerationSettings.from_mapping(dict(data.get("moderation", {})))  # categories, URLs
    if data.get("redis"):
        from gateway.redis_link import RedisSettings

        RedisSettings.from_mapping(dict(data["redis"]), env)

    connector_settings(EventSettings.from_mapping(dict(data.get("events", {}))).connectors)
    QuotaSettings.from_mapping(dict(data.get("quotas", {})),
                               total_timeout=checked.timeouts.total)
    read_timeout = checked.server.read_timeout
    if read_timeout is not None and not read_timeout > checked.timeouts.total:
        raise ValueError(f"server.read_timeout ({read_timeout:g} s) must be longer than "
                         f"timeouts.total ({checked.timeouts.total:g} s): a client reading a "
                         "stream sends nothing, and hypercorn would close its connection")


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
