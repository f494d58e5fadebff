"""The configuration file's schema: one pydantic model per TOML section.

Every model forbids unknown keys and is strict (a string is not a number, a number is not a
string), so a typo or a wrong type fails `check-config` and start-up with the key's full path,
instead of silently keeping a default. The JSON Schema printed by `python -m gateway
config-schema` is generated from these models.

Adding a section: write a `Section` subclass here and add it to `SECTIONS`. That is all the file
needs to accept and check it; `gateway/config/settings.py` turns the checked sections into the
`Config` the rest of the code reads (add a field there if code needs the section), and
docs/configuration.md shows the section (its test loads every block it shows).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveSeconds = Annotated[float, Field(gt=0)]
NonNegativeSeconds = Annotated[float, Field(ge=0)]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class Section(BaseModel):
    """A table of the configuration file: unknown keys are errors, types are checked strictly,
    and NaN or infinity are not numbers of seconds."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class ServerSection(Section):
    host: str = Field("127.0.0.1", description="interface to bind (--host overrides)")
    port: int = Field(8080, ge=0, le=65535, description="port to bind (--port overrides)")
    workers: PositiveInt = Field(1, description="worker processes sharing the database")
    shutdown_grace: NonNegativeSeconds = Field(
        20.0, description="seconds in-flight requests get after SIGTERM/SIGINT")
    log_level: LogLevel = Field("INFO", description="level of the JSON log lines on stderr")
    read_timeout: PositiveSeconds | None = Field(
        None, description="hypercorn's read timeout: a connection silent this long is closed; "
        "must outlast the longest stream (default: timeouts.total + 60)")
    backlog: PositiveInt = Field(
        4096, description="connections the kernel queues before the worker accepts them "
        "(capped by net.core.somaxconn); a burst of clients beyond it gets connection errors")
    keep_alive_timeout: PositiveSeconds = Field(
        75.0, description="seconds an idle keep-alive client connection stays open")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class DatabaseSection(Section):
    path: str = Field("data/gateway.db", description="the SQLite file; its directory is the "
                      "data directory (served policies, the generated admin token)")
    url: str | None = Field(
        None, description="postgresql://user@host:port/db: accounts, keys, projects, grants "
        "and policies live in PostgreSQL, shared by replicas (no password in the url)")
    password_env: str | None = Field(
        None, description="environment variable holding the PostgreSQL password (default: "
        "libpq's own PGPASSWORD / ~/.pgpass)")
    pool_min_size: NonNegativeInt = Field(1, description="PostgreSQL connections kept open "
                                          "per worker")
    pool_max_size: PositiveInt = Field(4, description="most PostgreSQL connections per worker; "
                                       "also the worker threads that may use them at once")
    connect_timeout: PositiveSeconds = Field(
        5.0, description="longest wait for a PostgreSQL connection, pooled or new")
    poll_interval: PositiveSeconds = Field(
        0.25, description="how often each worker checks PostgreSQL for identity and policy "
        "changes made by other replicas")

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            raise ValueError(f'must look like "postgresql://user@host:5432/dbname", not '
                             f'{value!r}')
        if parts.password:
            raise ValueError("must not hold a password: name the environment variable that "
                             "holds it with password_env")
        if not parts.path.strip("/"):
            raise ValueError("must name the database, like postgresql://user@host:5432/dbname")
        return value

    @model_validator(mode="after")
    def _pool_sizes(self) -> DatabaseSection:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError(f"pool_min_size ({self.pool_min_size}) must not exceed "
                             f"pool_max_size ({self.pool_max_size})")
        return self


class PoliciesSection(Section):
    directory: str | None = Field(
        None, description="the served .pol / .json policies (default: `policies` in the data "
        "directory, seeded with the example policies on first use)")
    inline_max_bytes: PositiveInt | None = Field(None, description="an inline policy's source")
    inline_max_lines: PositiveInt | None = Field(None, description=".pol lines, before parsing")
    inline_max_rules: PositiveInt | None = Field(None, description="rules, after parsing")
    inline_max_terms: PositiveInt | None = Field(None, description="list terms")
    inline_max_patterns: PositiveInt | None = Field(None, description="regular expressions")
    inline_compile_seconds: PositiveSeconds | None = Field(
        None, description="compile budget, on a worker thread")
    inline_compile_threads: PositiveInt | None = Field(
        None, description="inline compiles running at once per worker")
    inline_on_v1: bool | None = Field(None, description="false: /v1 refuses inline policies")


class LimitsSection(Section):
    max_body_bytes: PositiveInt = Field(10 * 1024 * 1024,
                                        description="larger bodies get 413 request_too_large")
    max_upstream_connections: PositiveInt = Field(
        4096, description="upstream connections per worker and provider (each stream holds one)")
    upstream_keepalive_connections: PositiveInt = Field(
        1024, description="idle upstream connections per worker and provider kept for reuse")
    upstream_keepalive_seconds: PositiveSeconds = Field(
        30.0, description="seconds an idle upstream connection is kept for reuse")
    max_concurrent_requests: PositiveInt = Field(
        4096, description="requests one worker serves at once; beyond, 503 server_busy")


class TimeoutsSection(Section):
    connect: PositiveSeconds = Field(10.0, description="connecting to the upstream")
    idle: PositiveSeconds = Field(
        120.0, description="waiting for response headers or the next stream frame")
    total: PositiveSeconds = Field(900.0, description="one whole upstream exchange")
    request_body: PositiveSeconds = Field(
        30.0, description="a client sending its whole request body (then 408)")


class ExternalClassifierSection(Section):
    """An external classifier's endpoint (docs/classifiers.md); unset keys take its defaults."""

    base_url: str | None = Field(None, description="http(s) base URL of the endpoint")
    api_key_env: str | None = Field(None, description="the variable holding its key")
    model: str | None = None
    timeout: PositiveSeconds | None = Field(None, description="seconds per call")
    max_concurrency: PositiveInt | None = Field(None, description="calls in flight per worker")
    images: bool | None = Field(None, description="send image parts, one per call")
    remote_images: bool | None = Field(
        None, description="send images given by a remote URL too (the classifier fetches them)")
    logprobs: bool | None = Field(None, description="Llama Guard: scores from log-probabilities")


class ModerationSection(Section):
    always_blocked: list[str] = Field(
        ["self-harm/instructions", "sexual/minors"],
        description="categories refused on every surface, for every project")
    classifier: Literal["builtin", "openai", "llama-guard", "chain"] = Field(
        "builtin", description="where a policy's category facts come from")
    chain_external: Literal["openai", "llama_guard"] = Field(
        "openai", description="with `chain`: the external classifier asked after builtin")
    chain_policies: list[str] = Field(
        [], description="with `chain`: policies whose category rules always get the external "
                        "classifier")
    unmoderated_images: Literal["on_error", "refuse", "allow"] = Field(
        "on_error", description="images no classifier can see")
    cache_entries: NonNegativeInt = Field(10_000, description="results remembered per worker")
    cache_ttl: PositiveInt = Field(
        86_400, description="seconds a result stays in the cache shared in Redis")
    breaker_failures: PositiveInt = Field(5, description="failures that open the breaker")
    breaker_cooldown: PositiveSeconds = Field(30.0, description="seconds the breaker stays open")
    stream_interval_chars: PositiveInt = Field(
        400, description="streamed output is classified every this many characters")
    max_images: NonNegativeInt = Field(16, description="image parts classified per request")
    openai: ExternalClassifierSection | None = None
    llama_guard: ExternalClassifierSection | None = None


class ProviderSection(Section):
    kind: Literal["openai", "anthropic"] | None = Field(
        None, description="the wire APIs it serves (default: the provider's name)")
    base_url: str | None = None
    api_key: str | None = Field(None, description="better: api_key_env")
    api_key_env: str | None = Field(None, description="the variable holding its key")


class RouteSection(Section):
    model: str = Field(description="model name, exact or a glob such as llama-*")
    provider: str = Field(description="a provider declared under [providers]")


class AdminSection(Section):
    token: str | None = Field(None, description="the admin token (better: token_env)")
    token_env: str = Field("GATEWAY_ADMIN_TOKEN", description="the variable holding it")
    generate_token: bool = Field(
        True, description="without a token, `serve` generates one into the data directory; "
        "false: no admin token at all (admins then need a JWT with the admin role)")


class JwtKeyFields(Section):
    """One verification key: `secret*` for HS256, `public_key*` for RS256 / ES256."""

    kid: str | None = None
    algorithm: Literal["HS256", "RS256", "ES256"] | None = None
    secret: str | None = None
    secret_file: str | None = None
    secret_env: str | None = None
    public_key: str | None = None
    public_key_file: str | None = None
    public_key_env: str | None = None


class JwtSection(JwtKeyFields):
    """[jwt]: one key's fields directly, or several in [[jwt.keys]]."""

    keys: list[JwtKeyFields] | None = None
    issuer: str | list[str] | None = None
    audience: str | list[str] | None = None
    leeway: NonNegativeSeconds = 0.0
    require_exp: bool = True
    account_claim: str = "org_id"
    default_account: str | None = None
    projects_claim: str = "projects"
    admin_claim: str = "roles"
    admin_role: str = "admin"
    super_admin_role: str | None = Field(
        None, description="a role whose admins manage every account, like the admin token")
    subject_claim: str = Field("sub", description="the claim a JWT caller's quotas are kept "
                               "under (X-Policy-User cannot change it)")
    grants: dict[str, list[str] | Literal["*"]] = Field(
        default_factory=dict, description="user id (`sub`) -> project ids, or \"*\"")


class ConnectorSection(Section):
    name: str
    type: Literal["jsonl", "webhook"]
    project_id: str | None = None
    batch_size: PositiveInt = 100
    poll_seconds: PositiveSeconds = 1.0
    lease_seconds: PositiveSeconds = 15.0
    path: str = Field("", description="jsonl: the file written")
    max_bytes: PositiveInt = 10 * 1024 * 1024
    backups: NonNegativeInt = 5
    url: str = Field("", description="webhook: where batches are POSTed")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: PositiveSeconds = 5.0
    retry_initial: PositiveSeconds = 0.5
    retry_max: PositiveSeconds = 60.0


class EventsSection(Section):
    queue_capacity: PositiveInt = 10_000
    batch_size: PositiveInt = 500
    batch_seconds: PositiveSeconds = 0.05
    busy_timeout: PositiveSeconds = 1.0
    retry_initial: PositiveSeconds = 0.05
    retry_max: PositiveSeconds = 2.0
    drain_timeout: NonNegativeSeconds = 10.0
    recent: NonNegativeInt = 1_000
    connectors: list[ConnectorSection] = Field(default_factory=list)


class QuotaWindows(Section):
    """Limits per window; 0 means unlimited."""

    minute: NonNegativeInt | None = None
    hour: NonNegativeInt | None = None
    daily: NonNegativeInt | None = None
    weekly: NonNegativeInt | None = None
    monthly: NonNegativeInt | None = None


class QuotaSpec(Section):
    requests: QuotaWindows | None = None
    tokens: QuotaWindows | None = None
    tool_calls: QuotaWindows | None = Field(None, description="governed MCP tool calls")


class ProjectQuotas(Section):
    budget: QuotaSpec | None = None
    user_quota: QuotaSpec | None = None


class QuotasSection(Section):
    default_output_tokens: NonNegativeInt = 1024
    reservation_ttl_seconds: PositiveSeconds | None = Field(
        None, description="default: timeouts.total + 60")
    threads: PositiveInt = 1
    budget: QuotaSpec | None = None
    user_quota: QuotaSpec | None = None
    projects: dict[str, ProjectQuotas] = Field(default_factory=dict)
    store: Literal["sqlite", "redis"] = Field(
        "sqlite", description="where counters live: the SQLite file, or Redis (needs [redis])")
    on_store_error: Literal["closed", "open"] = Field(
        "closed", description="Redis store down: refuse (503 quota_unavailable) or admit "
        "within a per-replica bound")


class EscalationTargetSection(Section):
    url: str = Field(description="where the target's notices are POSTed (http or https)")
    headers_env: dict[str, str] = Field(
        default_factory=dict, description="header name -> variable holding its value")


class EscalationSection(Section):
    """Where escalation notices may go: named targets policies refer to, and listed URLs."""

    targets: dict[str, EscalationTargetSection] = Field(default_factory=dict)
    allowed_urls: list[str] = Field(default_factory=list)
    timeout: PositiveSeconds | None = Field(None, description="one delivery attempt")
    retry_initial: PositiveSeconds | None = Field(None, description="first retry delay")
    retry_max: PositiveSeconds | None = Field(None, description="longest retry delay")


class McpServerSection(Section):
    """An upstream MCP server, served at /mcp/NAME and /policy/mcp/NAME (docs/mcp.md)."""

    url: str = Field(description="its Streamable HTTP endpoint (http or https)")
    headers: dict[str, str] = Field(default_factory=dict, description="literal headers")
    headers_env: dict[str, str] = Field(
        default_factory=dict, description="header -> variable holding its full value")
    connect_timeout: PositiveSeconds = 10.0
    idle_timeout: PositiveSeconds = Field(
        60.0, description="longest wait for the answer's head or its next bytes")
    total_timeout: PositiveSeconds = Field(300.0, description="one whole call, stream included")
    allowed_tools: list[str] = Field(default_factory=list, description="globs; [] = all")
    denied_tools: list[str] = Field(default_factory=list, description="globs; deny wins")


class McpSection(Section):
    servers: dict[str, McpServerSection] = Field(default_factory=dict)


class RedisSection(Section):
    """The state shared by replicas (docs/scale-out.md)."""

    url: str = Field(description="redis://host:port/db or rediss://host:port/db (TLS)")
    username: str | None = Field(None, description="the Redis ACL user")
    password_env: str | None = Field(None, description="the variable holding the password")
    key_prefix: str = Field("gw:", description="put before every key")
    cluster: bool = Field(False, description="a Redis Cluster (the url is one seed node)")
    request_timeout_ms: PositiveInt = Field(250, description="longest wait for one command")
    connect_timeout_ms: PositiveInt = Field(1000, description="longest wait for a connection")


class UpstreamSection(Section):
    forward_headers: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="request headers forwarded besides each API's own")


#: Every section of the file: the one place a new section is added.
SECTIONS: dict[str, Any] = {
    "server": ServerSection,
    "database": DatabaseSection,
    "policies": PoliciesSection,
    "limits": LimitsSection,
    "timeouts": TimeoutsSection,
    "moderation": ModerationSection,
    "providers": dict[str, ProviderSection],
    "routes": list[RouteSection],
    "admin": AdminSection,
    "jwt": JwtSection | None,
    "events": EventsSection,
    "quotas": QuotasSection,
    "escalation": EscalationSection,
    "upstream": UpstreamSection,
    "redis": RedisSection | None,
    "mcp": McpSection,
}


def _default(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return Field(default_factory=annotation)
    origin = getattr(annotation, "__origin__", None)
    if origin is dict:
        return Field(default_factory=dict)
    if origin is list:
        return Field(default_factory=list)
    return None


ConfigFile: type[Section] = create_model(  # type: ignore[call-overload]
    "ConfigFile", __base__=Section,
    **{name: (annotation, _default(annotation)) for name, annotation in SECTIONS.items()})


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the configuration file (for editors completing the TOML)."""
    schema = ConfigFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Policy gateway configuration"
    return schema
