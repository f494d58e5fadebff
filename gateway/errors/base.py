"""The base of every error that becomes an HTTP answer, and the one error that is always a bug
of ours. The hierarchy is drawn in gateway/errors/__init__.py."""

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


class InvalidTransition(RuntimeError):
    """A governed request's lifecycle (gateway/policy/lifecycle.py) got an event its phase does
    not allow. Never the caller's doing: a bug of ours, to report."""
