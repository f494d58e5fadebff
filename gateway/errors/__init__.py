"""Every error of the gateway, in one package. Who causes each one and what to do is in its
docstring; HTTP errors carry their status and wire `code`. Import them from here
(`from gateway.errors import InvalidRequest`). The modules group them by who causes them:

- base.py: `GatewayError`, and `InvalidTransition` (always our bug);
- client.py: `ClientError` and below (what the caller sent);
- access.py: `AuthenticationError`, `PermissionDenied` and below (who the caller is);
- server.py: `UpstreamError` and the 503s (the provider, the deployment, this worker's load);
- operator.py: `ConfigError`, the `ValueError`s and `SchemaMismatch` (what an operator, a
  policy author or a CLI user wrote);
- dependencies.py: the rest (what the gateway talks to: streams, webhooks, databases, Redis,
  classifiers).

Errors that become an HTTP answer (each adapter, gateway/adapters, renders them in its API's
own error shape)::

    GatewayError                      every error that becomes an HTTP answer
    ├── ClientError                   the caller sent something we cannot serve
    │   ├── InvalidRequest            400 invalid_request
    │   ├── InvalidPolicy             400 invalid_policy
    │   ├── ModerationBlocked         400 moderation_blocked
    │   ├── ProjectRequired           400 project_required
    │   ├── PolicyNotLinked           400 policy_not_linked
    │   ├── McpProtocolError          400 invalid_jsonrpc (and a JSON-RPC error code)
    │   │   ├── McpParseError         400 JSON-RPC -32700: not JSON
    │   │   ├── McpInvalidMessage     400 JSON-RPC -32600: not one JSON-RPC message
    │   │   ├── McpMethodNotFound     400 JSON-RPC -32601: a method MCP does not define
    │   │   └── McpInvalidParams      400 JSON-RPC -32602: tools/call without a tool name
    │   ├── NotFound                  404 not_found
    │   │   └── ProjectNotFound       404 project_not_found
    │   ├── MethodNotAllowed          405 method_not_allowed
    │   ├── RequestTimeout            408 request_timeout
    │   ├── PolicyIdMismatch          409 policy_id_mismatch
    │   ├── Conflict                  409 conflict
    │   ├── RequestTooLarge           413 request_too_large
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
    │                                     did not answer and quotas fail closed, or the
    │                                     quota file stayed locked
    └── HistoryUnavailable            503 history_unavailable: the shared event store
                                          (PostgreSQL) did not answer a history read

Errors that never become an HTTP answer: configuration, management and delivery problems,
reported to the operator or the CLI user, and our own bugs::

    ConfigError                       the configuration file or environment
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
    SchemaMismatch                    a database schema missing or newer than this version
    MalformedStream                   an upstream event stream that is not one
    WebhookError                      a connector destination that refused (destination)
    EventStorageError                 the events database cannot be written (environment)
    SharedStateUnavailable            Redis did not answer; each caller maps it (deployment)
    ClassifierFailed                  an external classifier could not classify (on_error decides)
    BreakerOpen                       the classifier's circuit breaker is open (on_error decides)
    MalformedVerdict (ValueError)     a classifier's answer we cannot read (on_error decides)
    InvalidTransition (RuntimeError)  a request lifecycle event out of order (our bug)

Anything else that escapes a handler is a bug of ours too; the app answers it with a clean 500
in the API's shape, never a traceback.
"""

from gateway.errors.access import (
    AdminRequired,
    ApiKeyRevoked,
    AuthenticationError,
    InvalidApiKey,
    InvalidToken,
    PermissionDenied,
    PlanRequired,
    PolicyRefused,
    ProjectDisabled,
    ProjectForbidden,
)
from gateway.errors.base import GatewayError, InvalidTransition
from gateway.errors.client import (
    ClientError,
    Conflict,
    InvalidPolicy,
    InvalidRequest,
    McpInvalidMessage,
    McpInvalidParams,
    McpMethodNotFound,
    McpParseError,
    McpProtocolError,
    MethodNotAllowed,
    ModerationBlocked,
    NotFound,
    PolicyIdMismatch,
    PolicyNotLinked,
    ProjectNotFound,
    ProjectRequired,
    QuotaExceeded,
    QuotaRefused,
    RequestTimeout,
    RequestTooLarge,
)
from gateway.errors.dependencies import (
    BreakerOpen,
    ClassifierFailed,
    EventStorageError,
    MalformedStream,
    MalformedVerdict,
    SharedStateUnavailable,
    WebhookError,
)
from gateway.errors.operator import (
    CommandError,
    ConfigError,
    ConnectorConfigError,
    EscalationConfigError,
    HistoryQueryError,
    IdentityError,
    JwtSettingsError,
    PolicyConflict,
    PolicyDirectoryError,
    PolicyFileError,
    PolicyIdRefused,
    ProjectError,
    SchemaMismatch,
)
from gateway.errors.server import (
    DatabaseUnavailable,
    HistoryUnavailable,
    QuotaUnavailable,
    ServerBusy,
    ShuttingDown,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = [
    "AdminRequired", "ApiKeyRevoked", "AuthenticationError", "BreakerOpen", "ClassifierFailed",
    "ClientError", "CommandError", "ConfigError", "Conflict", "ConnectorConfigError",
    "DatabaseUnavailable", "EscalationConfigError", "EventStorageError", "GatewayError",
    "HistoryQueryError", "HistoryUnavailable", "IdentityError", "InvalidApiKey",
    "InvalidPolicy", "InvalidRequest", "InvalidToken", "InvalidTransition", "JwtSettingsError",
    "MalformedStream", "MalformedVerdict", "McpInvalidMessage", "McpInvalidParams",
    "McpMethodNotFound", "McpParseError", "McpProtocolError", "MethodNotAllowed",
    "ModerationBlocked", "NotFound", "PermissionDenied", "PlanRequired", "PolicyConflict",
    "PolicyDirectoryError", "PolicyFileError", "PolicyIdMismatch", "PolicyIdRefused",
    "PolicyNotLinked", "PolicyRefused", "ProjectDisabled", "ProjectError", "ProjectForbidden",
    "ProjectNotFound", "ProjectRequired", "QuotaExceeded", "QuotaRefused", "QuotaUnavailable",
    "RequestTimeout", "RequestTooLarge", "SchemaMismatch", "ServerBusy",
    "SharedStateUnavailable", "ShuttingDown", "UpstreamError", "UpstreamTimeout",
    "UpstreamUnavailable", "WebhookError",
]
