"""Everything one worker process holds for its lifetime, opened and closed by the app.

Typed resources only: the logic that uses them lives in the packages that own each concern.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import httpx
import sqlite_utils
import trio

from gateway.admin.registry import PolicyRegistry, PolicyRevision, list_revisions
from gateway.admin.reload import emit_revision_events
from gateway.config import Config, ConfigError
from gateway.db import open_database
from gateway.events.connectors import ConnectorTask, connector_settings
from gateway.events.sink import EventSink, QueueSink
from gateway.events.store import EventSettings, EventStore, EventWriter
from gateway.identity.credentials import authenticate
from gateway.identity.jwt import JwtSettings, JwtVerifier
from gateway.identity.keys import Caller, IdentityCache
from gateway.moderation import ModerationSettings, Moderator
from gateway.policy.governance import InlinePolicies
from gateway.policy.rollouts import Rollouts
from gateway.quota.limits import QuotaStore
from gateway.quota.sqlite import SqliteQuotaStore, settings_from_config
from gateway.upstream.exchange import Upstreams

log = logging.getLogger("gateway")


def _event_settings(config: Config) -> EventSettings:
    try:
        return EventSettings.from_mapping(config.events)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid [events] configuration: {exc}") from exc


def _connectors(config: Config, settings: EventSettings) -> list[ConnectorTask]:
    try:
        return [ConnectorTask(config.database_path, s)
                for s in connector_settings(settings.connectors)]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid [[events.connectors]]: {exc}") from exc


class GatewayState:
    def __init__(self, config: Config, *, echo_transport: httpx.AsyncBaseTransport | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.config = config
        self.upstreams = Upstreams(config, echo_transport=echo_transport, transport=transport)
        self.inline_policies = InlinePolicies()
        self.quota_settings = settings_from_config(config)
        self.quotas: QuotaStore = SqliteQuotaStore(config.database_path, self.quota_settings,
                                                   background=lambda: self.nursery)
        self.event_settings = _event_settings(config)
        self.event_sink = QueueSink(self.event_settings.queue_capacity,
                                    recent=self.event_settings.recent)
        self.events: EventSink = self.event_sink
        self.event_writer = EventWriter(
            self.event_sink,
            EventStore(config.database_path, busy_timeout=self.event_settings.busy_timeout),
            self.event_settings)
        self.connectors = _connectors(config, self.event_settings)
        self.event_writer.on_written += [c.wake for c in self.connectors]
        self.jwt: JwtVerifier | None = (
            JwtVerifier(JwtSettings.from_mapping(config.jwt, os.environ)) if config.jwt else None)
        #: The classifier a policy's category facts come from (docs/classifiers.md).
        self.moderator = Moderator(ModerationSettings.from_mapping(config.moderation),
                                   os.environ, transport=transport)
        self.rollouts = Rollouts(lambda event: self.events.emit(event), self._old_revision)
        #: The app's nursery (set while serving): owner of background notifications.
        self.nursery: trio.Nursery | None = None
        self._db: sqlite_utils.Database | None = None
        self._identities: IdentityCache | None = None
        self._registry: PolicyRegistry | None = None

    async def open(self) -> None:
        self._db = open_database(self.config.database_path)
        self._identities = IdentityCache(self._db)
        self._identities.refresh_if_changed()
        self._registry = PolicyRegistry.load(self.config.policies_dir, self._db)
        for path, diagnostics in self._registry.errors.items():
            log.error("policy file %s failed its check: %s", path,
                      "; ".join(d.message for d in diagnostics))
        emit_revision_events(self, self._registry)
        await self.upstreams.open()

    async def aclose(self) -> None:
        await self.upstreams.aclose()
        await self.moderator.aclose()
        if self._db is not None:
            self._db.conn.close()
            self._db = None

    @property
    def serving(self) -> bool:
        return self._registry is not None

    @property
    def db(self) -> sqlite_utils.Database:
        if self._db is None:
            raise RuntimeError("the gateway is not serving")
        return self._db

    @property
    def identities(self) -> IdentityCache:
        if self._identities is None:
            raise RuntimeError("the gateway is not serving")
        return self._identities

    directory = identities

    @property
    def registry(self) -> PolicyRegistry:
        """The policies in force; the reloader swaps in a new registry in one assignment."""
        if self._registry is None:
            raise RuntimeError("the gateway is not serving")
        return self._registry

    @registry.setter
    def registry(self, registry: PolicyRegistry) -> None:
        self._registry = registry

    def authenticate(self, credential: str) -> Caller:
        return authenticate(self.identities, self.jwt, credential)

    def _old_revision(self, policy_id: str, revision: int) -> PolicyRevision | None:
        return next((r for r in list_revisions(self.db, policy_id) if r.revision == revision),
                    None)

    # --- escalation ------------------------------------------------------------------------

    def notify_escalation(self, url: str, event: dict[str, Any]) -> None:
        """POST the event to the escalation URL in the background; never blocks the request."""
        if self.nursery is None:
            log.warning("escalation to %s not sent: the gateway is not serving", url)
            return
        self.nursery.start_soon(self._post_escalation, url, event)

    async def _post_escalation(self, url: str, event: dict[str, Any]) -> None:
        try:
            with trio.move_on_after(10):
                async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
                    response = await client.post(url, json=event)
                    if response.status_code >= 400:
                        log.warning("escalation POST to %s answered %s", url,
                                    response.status_code)
        except httpx.HTTPError as exc:
            log.warning("escalation POST to %s failed: %r", url, exc)
