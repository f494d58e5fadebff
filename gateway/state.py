"""Everything one worker process holds for its lifetime, opened and closed by the app.

Typed resources only: the logic that uses them lives in the packages that own each concern.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import sqlite_utils
import trio

from gateway.admin.registry import PolicyRegistry, PolicyRevision, list_revisions
from gateway.admin.reload import emit_revision_events
from gateway.config import Config
from gateway.db import open_database
from gateway.errors import ConfigError
from gateway.events.connectors import ConnectorTask, connector_settings
from gateway.events.pg_store import PgEventStore
from gateway.events.sink import EventSink, QueueSink
from gateway.events.store import EventSettings, EventStorage, EventStore, EventWriter
from gateway.identity.credentials import authenticate
from gateway.identity.jwt import JwtSettings, JwtVerifier
from gateway.identity.keys import Caller, IdentityCache
from gateway.moderation import ModerationSettings, Moderator
from gateway.policy.escalation import EscalationSettings
from gateway.policy.inline import InlineBudget, InlinePolicies
from gateway.policy.rollout import RolloutEngine
from gateway.policy.rollout_state import RedisRolloutState
from gateway.policy.rollouts import Rollouts
from gateway.quota.limits import QuotaStore
from gateway.quota.redis import quota_store_for
from gateway.quota.sqlite import settings_from_config
from gateway.redis_link import RedisLink, redis_settings
from gateway.storage.postgres import Postgres
from gateway.upstream.exchange import Upstreams

log = logging.getLogger("gateway")


def _event_settings(config: Config) -> EventSettings:
    try:
        return EventSettings.from_mapping(config.events)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid [events] configuration: {exc}") from exc


def _connectors(config: Config, settings: EventSettings, escalation: EscalationSettings,
                redis: RedisLink | None, pg: Postgres | None) -> list[ConnectorTask]:
    # Escalation notices are webhook connectors too: retries, backoff, progress in the DB.
    entries = [*settings.connectors, *escalation.connector_entries()]
    try:
        return [ConnectorTask(config.database_path, s, redis=redis, pg=pg)
                for s in connector_settings(entries)]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid [[events.connectors]]: {exc}") from exc


def _event_store(state: GatewayState) -> EventStorage:
    timeout = state.event_settings.busy_timeout
    if state.postgres is not None:
        return PgEventStore(state.postgres, lock_timeout=timeout)
    return EventStore(state.config.database_path, busy_timeout=timeout)


class GatewayState:
    def __init__(self, config: Config, *, echo_transport: httpx2.AsyncBaseTransport | None = None,
                 transport: httpx2.AsyncBaseTransport | None = None):
        self.config = config
        self.upstreams = Upstreams(config, echo_transport=echo_transport, transport=transport)
        #: Where escalation notices may go: `[escalation]` (gateway/policy/escalation.py).
        self.escalation = EscalationSettings.from_mapping(config.escalation, os.environ)
        self.inline_policies = InlinePolicies(InlineBudget.from_mapping(config.inline_policy),
                                              self.escalation)
        self.quota_settings = settings_from_config(config)
        redis = redis_settings(config)
        #: The state shared by replicas (docs/scale-out.md), when `[redis]` is configured.
        self.redis: RedisLink | None = RedisLink(redis) if redis is not None else None
        self.quotas: QuotaStore = quota_store_for(config, self.quota_settings, self.redis,
                                                  background=lambda: self.nursery)
        #: Extra `/readyz` checks: name -> probe answering "ok" or "unavailable: why".
        self.readiness_checks: dict[str, Callable[[], Awaitable[str]]] = {}
        if self.redis is not None:
            self.readiness_checks["redis"] = self.redis.ping
        self.event_settings = _event_settings(config)
        self.event_sink = QueueSink(self.event_settings.queue_capacity,
                                    recent=self.event_settings.recent)
        self.events: EventSink = self.event_sink
        #: The pool of the PostgreSQL that `[database] url` names: the events of every replica.
        self.postgres: Postgres | None = (Postgres(config.postgres) if config.postgres
                                          else None)
        self.event_writer = EventWriter(self.event_sink, _event_store(self),
                                        self.event_settings)
        self.connectors = _connectors(config, self.event_settings, self.escalation, self.redis,
                                      self.postgres)
        self.event_writer.on_written += [c.wake for c in self.connectors]
        self.jwt: JwtVerifier | None = (
            JwtVerifier(JwtSettings.from_mapping(config.jwt, os.environ)) if config.jwt else None)
        #: The classifier a policy's category facts come from (docs/classifiers.md).
        self.moderator = Moderator(ModerationSettings.from_mapping(config.moderation),
                                   os.environ, transport=transport, redis=self.redis)
        #: Auto-rollback windows summed across replicas in Redis when it is configured.
        self.rollouts = Rollouts(
            lambda event: self.events.emit(event), self._old_revision,
            RolloutEngine(RedisRolloutState(self.redis) if self.redis is not None else None))
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
        if self.redis is not None:
            answer = await self.redis.ping()
            if answer != "ok":
                log.error("Redis at %s does not answer at start (%s): /readyz reports not ready "
                          "until it does, and it is used as soon as it answers",
                          self.redis.settings.where, answer)

    async def aclose(self) -> None:
        await self.upstreams.aclose()
        await self.moderator.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        if self.postgres is not None:
            await trio.to_thread.run_sync(self.postgres.close)
        if self._db is not None:
            self._db.conn.close()
            self._db = None

    def shared_state_tasks(self) -> list[Callable[..., Awaitable[None]]]:
        """Background tasks that keep state shared with other replicas (run by the app)."""
        state: Any = self.rollouts.engine.state
        return [state.run] if state.shared else []

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

