"""Every error of the gateway, in one place. Who causes each one and what to do is in its
docstring; HTTP errors carry their status and wire `code`.

Errors that become an HTTP answer (each adapter, gateway/adapters, renders them in its API's
own error shape)::

    GatewayError                      every error that becomes an HTTP answer
    ├── ClientError                   the caller sent something we cannot serve
    │   ├── InvalidRequest            400 invalid_request
    │   ├── InvalidPolicy             400 invalid_policy
    │   ├── ModerationBlocked         400 moderation_blocked
    │   ├── ProjectRequired           400 project_required
    │   ├── PolicyNotLinked           400 policy_not_linked
    │   ├── NotFound                  404 not_found
    │   │   └── ProjectNotFound       404 project_not_found
    │   ├── MethodNotAllowed          405 method_not_allowed
    │   ├── RequestTimeout            408 request_timeout
    │   ├── PolicyIdMismatch          409 policy_id_mismatch
    │   ├── Conflict                  409 conflict
    │   ├── McpProtocolError          400 invalid_jsonrpc: not a JSON-RPC message we serve
    │   │   ├── McpParseError             (JSON-RPC -32700)
    │   │   ├── McpInvalidMessage         (JSON-RPC -32600)
    │   │   ├── McpMethodNotFound         (JSON-RPC -32601)
    │   │   └── McpInvalidParams          (JSON-RPC -32602)
    │   ├── RequestTooLarge           413 request_too_large
    │   ├── McpProtocolError          400 invalid_jsonrpc (and a JSON-RPC error code)
    │   │   ├── McpParseError         400 JSON-RPC -32700: not JSON
    │   │   ├── McpInvalidMessage     400 JSON-RPC -32600: not one JSON-RPC message
    │   │   ├── McpMethodNotFound     400 JSON-RPC -32601: a method MCP does not define
    │   │   └── McpInvalidParams      400 JSON-RPC -32602: tools/call without a tool name
    │   └── QuotaExceeded             429 quota_exceeded
    │       └── QuotaRefused          429 quota_exceeded, with the exhausted window
    ├── AuthenticationError           401: who is calling is unknown
    │   ├── InvalidApiKey             401 invalid_api_key
    │   ├── ApiKeyRevoked             401 api_key_revoked
    │   └── InvalidToken              401 invalid_token
    ├── PermissionDenied              403: the caller is known but may not do this
    │   ├── AdminRequired             403 admin_required
    │   ├── PlanRequired              403 policy_gateway_plan_required
    │   ├── ProjectForbidden          403 project_forbidden
    │   ├── ProjectDisabled           403 project_disabled
    │   └── PolicyRefused             403 policy_refused
    ├── UpstreamError                 the provider failed us
    │   ├── UpstreamUnavailable       502 upstream_unavailable
    │   └── UpstreamTimeout           504 upstream_timeout
    ├── ServerBusy                    503 server_busy: this worker is at its request cap
    ├── ShuttingDown                  503 server_shutting_down: the grace period ended
    ├── DatabaseUnavailable           503 database_unavailable: PostgreSQL did not answer a
    │                                     management call (requests keep their snapshot)
    ├── QuotaUnavailable              503 quota_unavailable: the shared quota store (Redis)
    │                                     did not answer and quotas fail closed
    └── HistoryUnavailable            503 history_unavailable: the shared event store
                                          (PostgreSQL) did not answer a history read

Errors that never become an HTTP answer: configuration, management and delivery problems,
reported to the operator or the CLI user, and our own bugs::

    ConfigError                       the configuration file or environment (operator)
    ValueError
    ├── JwtSettingsError              [jwt] (operator)
    ├── EscalationConfigError         [escalation] (operator)
    ├── ConnectorConfigError          [[events.connectors]] (operator)
    ├── PolicyDirectoryError          [policies] directory (operator)
    ├── PolicyFileError               a policy that fails its check (policy author)
    ├── PolicyIdRefused               a policy write with an unusable id (policy author)
    ├── PolicyConflict                a policy write that collides with the directory
    ├── ProjectError                  project and grant management arguments
    ├── IdentityError                 account and key management arguments
    ├── HistoryQueryError             a malformed history filter (caller)
    └── CommandError                  a CLI command that cannot do what it was asked
    MalformedStream                   an upstream event stream that is not one (upstream)
    WebhookError                      a connector destination that refused (destination)
    EventStorageError                 the events database cannot be written (environment)
    SharedStateUnavailable            Redis did not answer; each caller maps it (deployment)
    SchemaMismatch                    a database schema missing or newer than this version
    ClassifierFailed                  an external classifier could not classify (on_error decides)
    BreakerOpen                       the classifier's circuit breaker is open (on_error decides)
    MalformedVerdict (ValueError)     a classifier's answer we cannot read (on_error decides)
    InvalidTransition                 a request lifecycle event out of order (our bug)

Anything else that escapes a handler is a bug of ours too; the app answers it with a clean 500
in the API's shape, never a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import dsl


class GatewayError(Exception):
    """Base class: an error with an HTTP status, a wire `code` and an OpenAI-style `type`."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    error_type: ClassVar[str] = "server_error"
    #: Anthropic's `error.type` for the same condition.
    anthropic_type: ClassVar[str] = "api_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        #: Response headers that belong to this answer (for example `Retry-After`).
        self.headers: dict[str, str] = dict(headers or {})
        #: Top-level keys added beside `error` (for example the `policy` object).
        self.extra: dict[str, Any] = dict(extra or {})


class ClientError(GatewayError):
    """The caller sent something the gateway cannot serve. The caller must change the request."""

    status = 400
    code = "invalid_request"
    error_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class InvalidRequest(ClientError):
    """The body is not JSON, not an object, misses a required field or has a wrong type.

    Caused by the caller; the message names the field. Fix the request body.
    """


class InvalidPolicy(ClientError):
    """An inline `policy` failed its check. Caused by the caller; the message holds diagnostics."""

    code = "invalid_policy"


class ModerationBlocked(ClientError):
    """An always-blocked or request-flagged category was found in the input. Caused by content."""

    code = "moderation_blocked"


class ProjectRequired(ClientError):
    """JWT callers must name a project (`X-Policy-Project` or `policy_project_id`)."""

    code = "project_required"


class PolicyNotLinked(ClientError):
    """The project has no linked policy. An operator must link one (there is no default)."""

    code = "policy_not_linked"


class NotFound(ClientError):
    """No such path. Caused by the caller: check the base URL."""

    status = 404
    code = "not_found"
    anthropic_type = "not_found_error"


class ProjectNotFound(NotFound):
    """The named project does not exist. Caused by the caller or a deleted project."""

    code = "project_not_found"


class MethodNotAllowed(ClientError):
    """The path exists but not for this HTTP method. Caused by the caller."""

    status = 405
    code = "method_not_allowed"


class RequestTimeout(ClientError):
    """The request body did not arrive within `[timeouts] request_body` seconds. Caused by the
    client or its network (a body trickling in): send the body at once, or retry."""

    status = 408
    code = "request_timeout"
    anthropic_type = "timeout_error"


class PolicyIdMismatch(ClientError):
    """The caller expected another policy than the one governing the project.

    Deliberately an error, so a client never silently runs under a policy it did not expect.
    """

    status = 409
    code = "policy_id_mismatch"


class RequestTooLarge(ClientError):
    """The body is over the configured limit. Send less, or ask the operator to raise it."""

    status = 413
    code = "request_too_large"
    anthropic_type = "request_too_large"


class QuotaExceeded(ClientError):
    """A project or user quota is used up. Retry after `Retry-After` seconds."""

    status = 429
    code = "quota_exceeded"
    error_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"


class QuotaRefused(QuotaExceeded):
    """A project or user quota is used up: caused by the caller's volume. Retry after
    `Retry-After` seconds (the reset of the exhausted window), or ask the operator for more.
    Built by `gateway.quota.limits.quota_refusal`, which words the message."""

    def __init__(self, message: str, *, headers: Mapping[str, str], reason_code: str,
                 exhausted: Any, remaining: dict[str, Any] | None) -> None:
        super().__init__(message, headers=headers)
        self.reason_code = reason_code
        #: The exhausted window's usage (`gateway.quota.limits.Usage`).
        self.exhausted = exhausted
        #: The `quota` field of the `policy` object.
        self.remaining = remaining


class McpProtocolError(ClientError):
    """An MCP client sent something that is not a JSON-RPC message the gateway can serve (see
    docs/mcp.md, "Bad input"). Caused by the client; answered with the JSON-RPC error
    `rpc_code`, in-band (HTTP 200) when the message has an id, with HTTP 400 when it has none."""

    code = "invalid_jsonrpc"
    rpc_code: ClassVar[int] = -32600


class McpParseError(McpProtocolError):
    """The body is not valid JSON."""

    rpc_code = -32700


class McpInvalidMessage(McpProtocolError):
    """Valid JSON but not one JSON-RPC 2.0 message: a batch (MCP allows none), no `jsonrpc`
    field, or a method that is not a string."""


class McpMethodNotFound(McpProtocolError):
    """A request for a method that MCP does not define."""

    rpc_code = -32601


class McpInvalidParams(McpProtocolError):
    """`tools/call` without a tool `name`, or with `arguments` that are not an object; a
    `notifications/cancelled` whose `requestId` no request can have."""

    rpc_code = -32602


class Conflict(ClientError):
    """The write collides with what exists (duplicate id, policy id in another file). Caused by
    the client: pick another id, or update the existing object instead."""

    status = 409
    code = "conflict"


class AuthenticationError(GatewayError):
    """The caller's credential is missing or not valid. The caller must present a valid one."""

    status = 401
    code = "invalid_api_key"
    error_type = "authentication_error"
    anthropic_type = "authentication_error"


class InvalidApiKey(AuthenticationError):
    """No credential, or an API key the gateway does not know."""


class ApiKeyRevoked(AuthenticationError):
    """The API key was revoked by an operator. Ask for a new key."""

    code = "api_key_revoked"


class InvalidToken(AuthenticationError):
    """A JWT that is malformed, badly signed, expired, not yet valid or for another audience."""

    code = "invalid_token"


class PermissionDenied(GatewayError):
    """The caller is known but may not do this. Only an operator can change that."""

    status = 403
    code = "permission_denied"
    error_type = "permission_error"
    anthropic_type = "permission_error"


class AdminRequired(PermissionDenied):
    """A valid credential that is not an admin's. Caused by the caller: use the `[admin]` token
    (GATEWAY_ADMIN_TOKEN) or a JWT carrying the admin role."""

    code = "admin_required"


class PlanRequired(PermissionDenied):
    """The account's plan does not include the Policy Gateway (`free` is compat only)."""

    code = "policy_gateway_plan_required"


class ProjectForbidden(PermissionDenied):
    """The credential may not use the named project. Naming a project never widens access."""

    code = "project_forbidden"


class ProjectDisabled(PermissionDenied):
    """The project is disabled by an operator."""

    code = "project_disabled"


class PolicyRefused(PermissionDenied):
    """The policy refused the request or its output. Caused by content; see the `policy` object.

    One shape on every API, streamed or not: `code` `policy_refused`, type `permission_error`
    (the type the Anthropic SDK and litellm map to a non-retryable 403; the OpenAI SDKs map by
    status). `x-should-retry: false` tells both official SDKs, whatever their retry policy,
    that the same request would be refused again.
    """

    code = "policy_refused"

    def __init__(self, message: str, *, param: str | None = None,
                 headers: Mapping[str, str] | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, param=param, headers={"x-should-retry": "false",
                                                        **(headers or {})}, extra=extra)


class UpstreamError(GatewayError):
    """The provider behind the gateway failed. Not the caller's fault; retrying may help."""

    status = 502
    code = "upstream_unavailable"
    error_type = "server_error"
    anthropic_type = "api_error"


class UpstreamUnavailable(UpstreamError):
    """The upstream was unreachable, reset the connection, or sent a malformed response."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the configured timeouts."""

    status = 504
    code = "upstream_timeout"
    anthropic_type = "timeout_error"

class ShuttingDown(GatewayError):
    """The gateway is shutting down and ended this stream after the grace period. Caused by a
    deploy or restart, not by the client: retry the request (another instance will serve it)."""

    status = 503
    code = "server_shutting_down"
    error_type = "server_error"
    anthropic_type = "api_error"


class DatabaseUnavailable(GatewayError):
    """PostgreSQL, which holds the state shared by replicas, did not answer (down,
    unreachable, out of connections). Caused by the deployment. The request path never waits
    on it: it keeps serving from its in-memory snapshot, `/readyz` reports it, and management
    calls and CLI commands that need it fail with this error: retry once it is back."""

    status = 503
    code = "database_unavailable"
    error_type = "server_error"
    anthropic_type = "api_error"


class ServerBusy(GatewayError):
    """This worker already serves `[limits] max_concurrent_requests` requests. Caused by load
    (or by clients holding requests open), not by this request: retry after `Retry-After`."""

    status = 503
    code = "server_busy"
    error_type = "server_error"
    anthropic_type = "overloaded_error"


class QuotaUnavailable(GatewayError):
    """The shared quota store (Redis) did not answer and `[quotas] on_store_error = "closed"`:
    the gateway cannot tell whether a quota is used up, so it admits nothing rather than too
    much. Caused by the deployment, not the client: retry after `Retry-After` seconds."""

    status = 503
    code = "quota_unavailable"
    error_type = "server_error"
    anthropic_type = "api_error"
    #: The `policy` object's reason code and its `quota` field (none: nothing was counted).
    reason_code = "QUOTA_UNAVAILABLE"
    remaining: dict[str, Any] | None = None


class HistoryUnavailable(GatewayError):
    """The event history is in PostgreSQL and it did not answer (down, unreachable, out of
    connections). Caused by the deployment; requests are still served and their events queue
    in memory up to `[events] queue_capacity`. Retry after `Retry-After` seconds."""

    status = 503
    code = "history_unavailable"
    error_type = "server_error"
    anthropic_type = "api_error"


# --- errors that never become an HTTP answer -------------------------------------------------

class JwtSettingsError(ValueError):
    """The `[jwt]` configuration is invalid (unknown algorithm, missing secret, unreadable key
    file, weak key, ...). Caused by the operator; `field` names the setting to fix."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name


class ProjectError(ValueError):
    """A management operation on projects or grants was given bad arguments (unknown account or
    project, duplicate or malformed id, malformed quota, unknown policy). Caused by the operator
    or the management API client; the message says what to fix."""


class IdentityError(ValueError):
    """A management operation on accounts or keys was given bad arguments (unknown plan,
    unknown account, unknown key). Caused by the operator; the message says which."""


class MalformedStream(Exception):
    """The upstream sent bytes that are not a valid event stream. Caused by the upstream."""


class PolicyFileError(ValueError):
    """A policy file failed its check (or could not be read or placed). Caused by the policy's
    author: fix every diagnostic in `.diagnostics` (`python -m dsl check FILE` shows them too)."""

    def __init__(self, diagnostics: Sequence[dsl.Diagnostic], source: str | None = None) -> None:
        self.diagnostics = list(diagnostics)
        self.source = source
        first = next((d for d in self.diagnostics if d.severity == "error"), None)
        super().__init__(f"{first.file}:{first.line}:{first.column}: {first.message}"
                         if first else "the policy failed its check")

    def render(self) -> str:
        """The diagnostics in the compiler format of `python -m dsl check`."""
        return "\n".join(d.render(self.source) for d in self.diagnostics)


class PolicyDirectoryError(ValueError):
    """The configured policies directory does not exist or is not a directory. Caused by the
    operator: fix `[policies] directory` in the configuration (or GATEWAY_POLICIES)."""


class PolicyIdRefused(ValueError):
    """A policy write names an id that cannot be used (not a safe file name, or not the id of
    the policy being updated). Caused by the policy's author: change the id in the source."""


class PolicyConflict(ValueError):
    """A policy write collides with the directory (the id exists already, or another file
    claims it). Caused by the client: update the existing policy, or pick another id."""


class ConfigError(Exception):
    """The configuration file or environment is invalid. Caused by the operator: fix the file."""


class EscalationConfigError(ValueError):
    """The `[escalation]` section is invalid. Caused by the operator: fix the named entry."""


class ConnectorConfigError(ValueError):
    """An `[[events.connectors]]` entry is invalid. Caused by the operator: fix the entry named
    in the message."""


class WebhookError(Exception):
    """The webhook destination refused or did not answer. Caused by the destination; the
    connector retries with backoff until it accepts."""


class EventStorageError(Exception):
    """The events database could not be written (locked, full, removed, unwritable). Caused by
    the environment; the writer retries, and the operator should check disk and file."""


class HistoryQueryError(ValueError):
    """A history filter, limit or cursor is malformed. Caused by the caller: fix the parameter
    named in the message."""


class CommandError(ValueError):
    """A management command cannot do what it was asked (unknown policy, conflicting file,
    unreadable request body). Caused by the user of the CLI; the message says what to fix."""

class InvalidTransition(RuntimeError):
    """A governed request's lifecycle (gateway/policy/lifecycle.py) got an event its phase does
    not allow. Never the caller's doing: a bug of ours, to report."""


class SchemaMismatch(Exception):
    """The database's schema is missing, or newer than this version of the gateway knows.
    Caused by the operator: run `python -m gateway migrate` (missing or older), or run the
    newer gateway that migrated it (newer). The gateway never creates a PostgreSQL schema
    silently."""


class SharedStateUnavailable(Exception):
    """Not an answer: Redis, which holds the state shared by replicas, did not answer a call.
    Each caller turns it into its documented behaviour (`QuotaUnavailable`, fail open, local
    rollout state, no connector delivery)."""


class ClassifierFailed(Exception):
    """An external classifier could not classify (timeout, HTTP error, unreadable answer, open
    circuit breaker). Never answered as such: the policy's `on_error` decides the request, with
    reason code CLASSIFIER_ERROR. `kind` is a short label for metrics and the decision;
    `image`: the call classified an image (whose URL the caller chose)."""

    def __init__(self, kind: str, message: str, *, image: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.image = image


class BreakerOpen(Exception):
    """The circuit breaker is open: the classifier failed repeatedly and is not called until
    its cool-down ends. Becomes a policy evaluation error like any classifier failure."""


class MalformedVerdict(ValueError):
    """A classifier answered something we cannot read. Caused by the classifier or whatever
    answers at its URL; it becomes a policy evaluation error (the policy's `on_error`)."""
