"""Errors the gateway answers with, each mapped to a status and a wire `code` (SPEC §11).

Exception hierarchy::

    GatewayError                      every error that becomes an HTTP answer
    ├── ClientError                   the caller sent something we cannot serve
    │   ├── InvalidRequest            400 invalid_request
    │   ├── InvalidPolicy             400 invalid_policy
    │   ├── ModerationBlocked         400 moderation_blocked
    │   ├── ProjectRequired           400 project_required
    │   ├── PolicyNotLinked           400 policy_not_linked
    │   ├── NotFound                  404 not_found
    │   ├── ProjectNotFound           404 project_not_found
    │   ├── MethodNotAllowed          405 method_not_allowed
    │   ├── PolicyIdMismatch          409 policy_id_mismatch
    │   ├── RequestTooLarge           413 request_too_large
    │   ├── McpProtocolError          400 invalid_jsonrpc (and a JSON-RPC error code)
    │   │   ├── McpParseError         400 JSON-RPC -32700: not JSON
    │   │   ├── McpInvalidMessage     400 JSON-RPC -32600: not one JSON-RPC message
    │   │   ├── McpMethodNotFound     400 JSON-RPC -32601: a method MCP does not define
    │   │   └── McpInvalidParams      400 JSON-RPC -32602: tools/call without a tool name
    │   └── QuotaExceeded             429 quota_exceeded
    ├── AuthenticationError           401: who is calling is unknown
    │   ├── InvalidApiKey             401 invalid_api_key
    │   ├── ApiKeyRevoked             401 api_key_revoked
    │   └── InvalidToken              401 invalid_token
    ├── PermissionDenied              403: the caller is known but may not do this
    │   ├── PlanRequired              403 policy_gateway_plan_required
    │   ├── ProjectForbidden          403 project_forbidden
    │   ├── ProjectDisabled           403 project_disabled
    │   └── PolicyRefused             403 policy_refused
    └── UpstreamError                 the provider failed us
        ├── UpstreamUnavailable       502 upstream_unavailable
        └── UpstreamTimeout           504 upstream_timeout

Each adapter (gateway/adapters) renders these in its API's own error shape. Anything that is not a
`GatewayError` and escapes a handler is a bug of ours; the app still answers it with a clean 500
body, never a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


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
    """`tools/call` without a tool `name`, or with `arguments` that are not an object."""

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
    """The policy refused the request or its output. Caused by content; see the `policy` object."""

    code = "policy_refused"


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


class InvalidTransition(RuntimeError):
    """A governed request's lifecycle (gateway/policy/lifecycle.py) got an event its phase does
    not allow. Never the caller's doing: a bug of ours, to report."""
