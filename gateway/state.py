"""Everything one worker process holds for its lifetime, opened and closed by the app.

Typed resources only: the logic that uses them lives in the packages that own each concern.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import httpx2
import sqlite_utils
import trio

from gateway.admin.registry import LoadedPolicy, PolicyRegistry, PolicyRevision, list_revisions
from gateway.admin.reload import emit_revision_events
from gateway.config import Config
from gateway.db import open_database
from gateway.errors import ConfigError, DatabaseUnavailable
from gateway.events.connector_settings import connector_settings
from gateway.events.connectors import ConnectorTask
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
from gateway.quota.limits import QuotaStore, settings_from_config
from gateway.quota.redis import quota_store_for
from gateway.redis_link import RedisLink, redis_settings
from gateway.storage.changes import ChangePoller
from gateway.storage.migrations import check_postgres
from gateway.storage.pg_schema import MIGRATIONS
from gateway.storage.postgres import Postgres
from gateway.storage.sql import PostgresSql, Sql, SqliteSql
from gateway.upstream.exchange import Upstreams

log = logging.getLogger("gateway")
T = TypeVar("T")


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
        #: `/readyz` notes that leave the gateway ready (it serves from its snapshots):
        #: name -> "ok" or "unavailable: why", answered from memory.
        self.degraded_checks: dict[str, Callable[[], str]] = {}
        #: PostgreSQL, when `[database] url` names it: identity, policies and the events of
        #: every replica (docs/scale-out.md).
        self.postgres: Postgres | None = None
        self.changes: ChangePoller | None = None
        if config.postgres is not None:
            self.postgres = Postgres(config.postgres)
            self.changes = ChangePoller(self.postgres, config.postgres.poll_interval)
            self.degraded_checks["postgres"] = self.changes.status
        #: The policy reloader (gateway/admin/reload.py), set by the app.
        self.reloader: Any = None
        if self.redis is not None:
            self.readiness_checks["redis"] = self.redis.ping
        self.event_settings = _event_settings(config)
        self.event_sink = QueueSink(self.event_settings.queue_capacity,
                                    recent=self.event_settings.recent)
        self.events: EventSink = self.event_sink
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
        self._sql: Sql | None = None
        self._served: dict[tuple[str, int], LoadedPolicy] = {}

    async def open(self) -> None:
        self._db = open_database(self.config.database_path)
        if self.postgres is not None:
            await self._open_shared(self.postgres)
        else:
            self._identities = IdentityCache(self._db)
            self._identities.refresh_if_changed()
            self._registry = PolicyRegistry.load(self.config.policies_dir, self._db,
                                                 escalation=self.escalation)
        for path, diagnostics in self.registry.errors.items():
            log.error("policy file %s failed its check: %s", path,
                      "; ".join(d.message for d in diagnostics))
        self._remember(self.registry)
        emit_revision_events(self, self.registry)
        await self.upstreams.open()
        if self.redis is not None:
            answer = await self.redis.ping()
            if answer != "ok":
                log.error("Redis at %s does not answer at start (%s): /readyz reports not ready "
                          "until it does, and it is used as soon as it answers",
                          self.redis.settings.where, answer)

    async def _open_shared(self, pg: Postgres) -> None:
        """Identity and policies from PostgreSQL: its schema must be the one this code knows
        (`migrate` makes it; serve never does), and it must answer now."""
        from gateway.identity.shared import SharedIdentityCache
        from gateway.storage.policies import import_directory, pull

        pg.open()
        await pg.run(check_postgres, MIGRATIONS, pg.settings.where)
        identities = SharedIdentityCache(pg)
        await identities.refresh()
        self._identities = identities
        self._sql = PostgresSql(pg)
        assert self.changes is not None
        self.changes.watch("identity", identities.refresh)
        self.changes.mark_seen("identity", identities.version)
        self.changes.watch("policies", self._pull_policies)
        if self.config.policies_import_dir is not None:
            await pg.run(import_directory, self.config.policies_import_dir)
        await pg.run(pull, self.config.policies_dir)
        self._registry = await trio.to_thread.run_sync(partial(
            PolicyRegistry.load, self.config.policies_dir, self._sql,
            escalation=self.escalation))

    async def _pull_policies(self) -> None:
        """The policies counter moved: mirror the database, and reload if a file changed."""
        from gateway.storage.policies import pull

        assert self.postgres is not None
        if self.reloader is None:  # not serving yet: `open` pulls and loads by itself
            return
        # Under the reloader's lock: its watcher must not load the mirror half-way through a
        # pull (a renamed file would be recorded as a delete and a create).
        async with self.reloader.lock:
            if await self.postgres.run(pull, self.config.policies_dir):
                await self.reloader.reload_async()

    @property
    def shared_sql(self) -> Sql:
        """Where accounts, keys, projects, grants and policy revisions are: PostgreSQL, or
        this worker's SQLite connection. Call its stores through `store_call`."""
        if self._sql is None:
            self._sql = SqliteSql(self.db)
        return self._sql

    async def store_call(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` using `shared_sql`: on a worker thread with PostgreSQL (a round trip
        must not stall the event loop), inline with SQLite (its connection is this thread's)."""
        if self.postgres is None:
            return work(*args)
        return await trio.to_thread.run_sync(partial(work, *args),
                                             limiter=self.postgres.limiter)

    async def identity_changed(self) -> None:
        """After a write to accounts, keys, projects or grants through this worker: the next
        request sees it (read-your-writes); other replicas see it within a poll interval."""
        if self.postgres is None:
            self.identities.invalidate()
            return
        identities: Any = self.identities
        await identities.refresh()

    async def publish_policies(self, names: list[str]) -> None:
        """With PostgreSQL, put the mirror files an API write just changed into the database
        (the other replicas pull them); nothing to do with SQLite."""
        if self.postgres is None:
            return
        from gateway.storage.policies import publish

        await self.postgres.run(publish, self.config.policies_dir, names)

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
        tasks: list[Callable[..., Awaitable[None]]] = [state.run] if state.shared else []
        if self.changes is not None:
            tasks.append(self.changes.run)
            if self.config.policies_import_dir is not None:
                tasks.append(self._watch_import_dir)
        return tasks

    async def _watch_import_dir(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                                ) -> None:
        """GitOps: import the configured policies directory into PostgreSQL when it changes."""
        from gateway.admin.reload import directory_fingerprint
        from gateway.storage.policies import import_directory

        assert self.postgres is not None and self.changes is not None
        directory = self.config.policies_import_dir
        assert directory is not None
        seen = await trio.to_thread.run_sync(directory_fingerprint, directory)
        task_status.started()
        while True:
            await trio.sleep(self.changes.interval)
            now = await trio.to_thread.run_sync(directory_fingerprint, directory)
            if now is None or now == seen:
                continue
            try:
                await self.postgres.run(import_directory, directory)
            except DatabaseUnavailable as exc:  # retried on the next poll
                log.error("importing the policies directory %s failed: %s", directory, exc)
                continue
            except Exception:
                # A file gone mid-read (a git pull) or not UTF-8 must not take the worker down
                # with this task: logged, and retried on the next poll.
                log.exception("importing the policies directory %s failed; retrying", directory)
                continue
            seen = now
            self.changes.wake()

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
        self._remember(registry)

    def _remember(self, registry: PolicyRegistry) -> None:
        # Every revision this worker served, for the rare rollback event of a replaced one:
        # with PostgreSQL the request path must not read the history (see `_old_revision`).
        for loaded in registry.policies.values():
            self._served[(loaded.policy_id, loaded.revision)] = loaded

    def authenticate(self, credential: str) -> Caller:
        return authenticate(self.identities, self.jwt, credential)

    def _old_revision(self, policy_id: str, revision: int) -> PolicyRevision | None:
        if self.postgres is not None:  # called on the request path: memory only
            loaded = self._served.get((policy_id, revision))
            if loaded is None:
                return None
            return PolicyRevision(policy_id, revision, "update", loaded.sha256, loaded.source,
                                  loaded.name, loaded.classification, loaded.path, "")
        return next((r for r in list_revisions(self.shared_sql, policy_id)
                     if r.revision == revision), None)

