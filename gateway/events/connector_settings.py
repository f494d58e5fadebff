"""A connector's settings, read from one `[[events.connectors]]` entry (docs/events.md): its
kind (`jsonl` or `webhook`), what it delivers, its destination and its retry and lease timings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ConnectorConfigError
from gateway.events.leases import DEFAULT_LEASE_SECONDS


@dataclass(frozen=True, slots=True)
class ConnectorSettings:
    name: str
    type: str
    #: Only this project's events (None: every event).
    project_id: str | None = None
    batch_size: int = 100
    #: Seconds between looks at the database when no writer notification comes (other workers).
    poll_seconds: float = 1.0
    #: How long a worker's claim on this connector lasts unless renewed (renewed every third).
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    # jsonl
    path: str = ""
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 5
    # webhook
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 5.0
    retry_initial: float = 0.5
    retry_max: float = 60.0
    #: An escalation target's connector: only enforcement events escalated to this target.
    escalation_target: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ConnectorSettings:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConnectorConfigError(f"connector {data.get('name')!r}: unknown key(s) "
                                       f"{sorted(unknown)}")
        kind = data.get("type")
        if kind not in ("jsonl", "webhook"):
            raise ConnectorConfigError(f"connector {data.get('name')!r}: 'type' must be "
                                       "'jsonl' or 'webhook'")
        settings = cls(**{**data, "headers": dict(data.get("headers", {}))})
        if not settings.name:
            raise ConnectorConfigError("every connector needs a unique 'name'")
        if kind == "jsonl" and not settings.path:
            raise ConnectorConfigError(f"connector {settings.name!r}: 'path' is required")
        if kind == "webhook" and not settings.url.startswith(("http://", "https://")):
            raise ConnectorConfigError(f"connector {settings.name!r}: 'url' must be http(s)")
        return settings


def connector_settings(entries: Sequence[Mapping[str, Any]]) -> list[ConnectorSettings]:
    settings = [ConnectorSettings.from_mapping(entry) for entry in entries]
    names = [s.name for s in settings]
    if len(names) != len(set(names)):
        raise ConnectorConfigError(f"connector names must be unique: {names}")
    return settings
