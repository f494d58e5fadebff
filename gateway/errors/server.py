"""Errors that become an HTTP answer but are not the caller's doing (502, 503, 504): the
provider, the deployment or this worker's load; retrying may help. The hierarchy is drawn in
gateway/errors/__init__.py."""

from __future__ import annotations

from typing import Any

from gateway.errors.base import GatewayError


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


class ServerBusy(GatewayError):
    """This worker already serves `[limits] max_concurrent_requests` requests. Caused by load
    (or by clients holding requests open), not by this request: retry after `Retry-After`."""

    status = 503
    code = "server_busy"
    error_type = "server_error"
    anthropic_type = "overloaded_error"


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


class QuotaUnavailable(GatewayError):
    """The shared quota store (Redis) did not answer and `[quotas] on_store_error = "closed"`,
    or the quota file (SQLite) stayed locked by another process for 30 s: the gateway cannot
    tell whether a quota is used up, so it admits nothing rather than too much. Caused by the
    deployment, not the client: retry after `Retry-After` seconds."""

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
