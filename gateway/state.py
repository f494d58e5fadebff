"""Everything one worker process holds for its lifetime, opened and closed by the app.

Typed resources only: the logic that uses them lives in the packages that own each concern.
"""

from __future__ import annotations

import logging
import os

import httpx
import sqlite_utils
import trio

from gateway.admin.registry import PolicyRegistry, PolicyRevision, list_revisions
from gateway.admin.reload import emit_revision_events
from gateway.config import Config
from gateway.db import open_database
from gateway.errors import ConfigError
from gateway.events.connectors import ConnectorTask, connector_settings
from gateway.events.sink import EventSink, QueueSink
from gateway.events.store import EventSettings, EventStore, EventWriter
from gateway.identity.credentials import authenticate
from gateway.identity.jwt import JwtSettings, JwtVerifier
from gateway.identity.keys import Caller, IdentityCache
from gateway.policy.escalation import EscalationSettings
from gateway.policy.inline import InlineBudget, InlinePolicies
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


def _connectors(config: Config, settings: EventSettings, escalation: EscalationSettings
                ) -> list[ConnectorTask]:
    # Escalation notices are webhook connectors too: retries, backoff, progress in the DB.
    entries = [*settings.connectors, *escalation.connector_entries()]
    try:
        return [ConnectorTask(config.database_path, s) for s in connector_settings(entries)]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid [[events.connectors]]: {exc}") from exc


class GatewayState:
    def __init__(self, config: Config, *, echo_transport: httpx.AsyncBaseTransport | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.config = config
        self.upstreams = Upstreams(config, echo_transport=echo_transport, transport=transport)
        #: Where escalation notices may go: `[escalation]` (gateway/policy/escalation.py).
        self.escalation = EscalationSettings.from_mapping(config.escalation, os.environ)
        self.inline_policies = InlinePolicies(InlineBudget.from_mapping(config.inline_policy),
                                              self.escalation)
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
        self.connectors = _connectors(config, self.event_settings, self.escalation)
        self.event_writer.on_written += [c.wake for c in self.connectors]
        self.jwt: JwtVerifier | None = (
            JwtVerifier(JwtSettings.from_mapping(config.jwt, os.environ)) if config.jwt else None)
        self.rollouts = Rollouts(lambda event: self.events.emit(event), self._old_revision)
        #: The app's nursery (set while serving).
        self.nursery: trio.Nursery | None = None
        self._db: sqlite_utils.Database | None = None
        self._identities: IdentityCache | None = None
        self._registry: PolicyRegistry | None = None

    async def open(self) -> None:
        self._db = open_database(self.config.database_path)
        self._identities = IdentityCache(self._db)
        self._identities.refresh_if_changed()
        self._registry = PolicyRegistry.load(self.config.policies_dir, self._db,
                                             escalation=self.escalation)
        for path, diagnostics in self._registry.errors.items():
            log.error("policy file %s failed its check: %s", path,
                      "; ".join(d.message for d in diagnostics))
        emit_revision_events(self, self._registry)
        await self.upstreams.open()

    async def aclose(self) -> None:
        await self.upstreams.aclose()
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

