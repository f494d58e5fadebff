"""Errors the caller causes by who it is: an unknown credential (401) or one that may not do
this (403). The hierarchy is drawn in gateway/errors/__init__.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.errors.base import GatewayError


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
