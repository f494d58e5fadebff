"""Errors the caller causes by what it sends (4xx but 401 and 403): the request must change.
The hierarchy is drawn in gateway/errors/__init__.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from gateway.errors.base import GatewayError


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


class Conflict(ClientError):
    """The write collides with what exists (duplicate id, policy id in another file). Caused by
    the client: pick another id, or update the existing object instead."""

    status = 409
    code = "conflict"


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
