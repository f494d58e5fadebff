"""Errors in what an operator, a policy author or a CLI user wrote: configuration, policy files,
management arguments, the database schema. They never become an HTTP answer as such; the
management API and the CLI word them. The hierarchy is drawn in gateway/errors/__init__.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dsl


class ConfigError(Exception):
    """The configuration file or environment is invalid. Caused by the operator: fix the file."""


class JwtSettingsError(ValueError):
    """The `[jwt]` configuration is invalid (unknown algorithm, missing secret, unreadable key
    file, weak key, ...). Caused by the operator; `field` names the setting to fix."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name


class EscalationConfigError(ValueError):
    """The `[escalation]` section is invalid. Caused by the operator: fix the named entry."""


class ConnectorConfigError(ValueError):
    """An `[[events.connectors]]` entry is invalid. Caused by the operator: fix the entry named
    in the message."""


class PolicyDirectoryError(ValueError):
    """The configured policies directory does not exist or is not a directory. Caused by the
    operator: fix `[policies] directory` in the configuration (or GATEWAY_POLICIES)."""


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


class PolicyIdRefused(ValueError):
    """A policy write names an id that cannot be used (not a safe file name, or not the id of
    the policy being updated). Caused by the policy's author: change the id in the source."""


class PolicyConflict(ValueError):
    """A policy write collides with the directory (the id exists already, or another file
    claims it). Caused by the client: update the existing policy, or pick another id."""


class ProjectError(ValueError):
    """A management operation on projects or grants was given bad arguments (unknown account or
    project, duplicate or malformed id, malformed quota, unknown policy). Caused by the operator
    or the management API client; the message says what to fix."""


class IdentityError(ValueError):
    """A management operation on accounts or keys was given bad arguments (unknown plan,
    unknown account, unknown key). Caused by the operator; the message says which."""


class HistoryQueryError(ValueError):
    """A history filter, limit or cursor is malformed. Caused by the caller: fix the parameter
    named in the message."""


class CommandError(ValueError):
    """A management command cannot do what it was asked (unknown policy, conflicting file,
    unreadable request body). Caused by the user of the CLI; the message says what to fix."""


class SchemaMismatch(Exception):
    """The database's schema is missing, or newer than this version of the gateway knows.
    Caused by the operator: run `python -m gateway migrate` (missing or older), or run the
    newer gateway that migrated it (newer). The gateway never creates a PostgreSQL schema
    silently."""
