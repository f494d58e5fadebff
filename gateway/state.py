"""Everything one worker process holds for its lifetime, opened and closed by the app."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import sqlite_utils
import trio

from gateway.config import Config, ConfigError
from gateway.db import open_database
from gateway.errors import InvalidToken
from gateway.events.connectors import ConnectorTask, connector_settings
from gateway.events.sink import EventSink, QueueSink, base_event
from gateway.events.store import EventSettings, EventStore, EventWriter
from gateway.identity.jwt import JwtSettings, JwtVerifier, looks_like_jwt
from gateway.identity.keys import Caller, IdentityCache
from gateway.policy.governance import InlinePolicies
from gateway.policy.rollout import RolloutEngine
from gateway.policy.rollout_state import RedisRolloutState
from gateway.quota.limits import QuotaStore
from gateway.quota.redis import quota_store_for
from gateway.quota.sqlite import settings_from_config
from gateway.redis_link import RedisLink, redis_settings
from gateway.upstream.exchange import Upstreams

log = logging.getLogger("gateway")


def _event_settings(config: Config) -> EventSettings:
    try:
        return EventSettings.from_mapping(config.events)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid [events] configuration: {exc}") from exc


def _connectors(config: Config, settings: EventSettings, redis: RedisLink | None
                ) -> list[ConnectorTask]:
    try:
        return [ConnectorTask(config.database_path, s, redis=redis)
                for s in connector_settings(settings.connectors)]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid [[events.connectors]]: {exc}") from exc


class GatewayState:
    def __init__(self, config: Config, *, echo_transport: httpx.AsyncBaseTransport | None = None):
        self.config = config
        self.upstreams = Upstreams(config, echo_transport=echo_transport)
        self.inline_policies = InlinePolicies()
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
        self.event_writer = EventWriter(
            self.event_sink,
            EventStore(config.database_path, busy_timeout=self.event_settings.busy_timeout),
            self.event_settings)
        self.connectors = _connectors(config, self.event_settings, self.redis)
        self.event_writer.on_written += [c.wake for c in self.connectors]
        self.jwt: JwtVerifier | None = (
            JwtVerifier(JwtSettings.from_mapping(config.jwt, os.environ)) if config.jwt else None)
        self.registry: Any = None
        #: Auto-rollback windows summed across replicas in Redis when it is configured.
        self.rollout: Any = RolloutEngine(
            RedisRolloutState(self.redis) if self.redis is not None else None)
        #: The app's nursery (set while serving): owner of background notifications.
        self.nursery: trio.Nursery | None = None
        self._db: sqlite_utils.Database | None = None
        self._identities: IdentityCache | None = None

    async def open(self) -> None:
        from gateway.admin.registry import PolicyRegistry

        self._db = open_database(self.config.database_path)
        self._identities = IdentityCache(self._db)
        self._identities.refresh_if_changed()
        self.registry = PolicyRegistry.load(self.config.policies_dir, self._db)
        for path, diagnostics in self.registry.errors.items():
            log.error("policy file %s failed its check: %s", path,
                      "; ".join(d.message for d in diagnostics))
        for change in self.registry.changes:
            self.events.emit(base_event(
                "revision", user_id=None, org_id=None, policy_id=change.policy_id,
                policy_name=change.name, policy_revision=change.revision,
                data_classification=change.classification, edit_type=change.edit_type,
                config_snapshot=change.source))
        await self.upstreams.open()
        if self.redis is not None:
            answer = await self.redis.ping()
            if answer != "ok":
                log.error("Redis at %s does not answer at start (%s): /readyz reports not ready "
                          "until it does, and it is used as soon as it answers",
                          self.redis.settings.where, answer)

    async def aclose(self) -> None:
        await self.upstreams.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        if self._db is not None:
            self._db.conn.close()
            self._db = None

    def shared_state_tasks(self) -> list[Callable[..., Awaitable[None]]]:
        """Background tasks that keep state shared with other replicas (run by the app)."""
        return [self.rollout.state.run] if self.rollout.state.shared else []

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

    def authenticate(self, credential: str) -> Caller:
        """An API key, or a JWT when the gateway is configured for them (SPEC §2, §3)."""
        if looks_like_jwt(credential):
            if self.jwt is None:
                raise InvalidToken("This gateway does not accept JWTs; use an API key.")
            user = self.jwt.verify(credential)
            account = self.identities.account(user.account_id)
            if account is None:
                raise InvalidToken(f"The token names an unknown account '{user.account_id}'.")
            return Caller(account=account, key=None, user_id=user.user_id, jwt=user)
        return self.identities.authenticate_key(credential)

    # --- rollout (SPEC §6) -----------------------------------------------------------------

    def rollout_for(self, loaded: Any, target: str, subject: str | None, decision: Any
                    ) -> tuple[str, bool]:
        """(rollout_mode, enforced) for this request; emits auto-rollback revision events."""
        if self.rollout is None:
            from gateway.policy.rollout import RolloutEngine

            self.rollout = RolloutEngine()
        outcome = self.rollout.resolve(
            loaded.policy, policy_id=loaded.policy_id, revision=loaded.revision, target=target,
            quota_subject=subject, decision=decision.decision, now=trio.current_time(),
            rand=random.random())
        for change in outcome.events:
            name, classification, source = loaded.name, loaded.policy.classification, \
                loaded.source
            if change.revision != loaded.revision:
                # The end of an older revision's rollback (a new one replaced it): the event
                # describes that revision, so its snapshot is that revision's source. Rare.
                from gateway.admin.registry import list_revisions

                old = next((r for r in list_revisions(self.db, change.policy_id)
                            if r.revision == change.revision), None)
                if old is not None:
                    name, classification, source = old.name, old.classification, old.source
            self.events.emit(base_event(
                "revision", user_id=None, org_id=None, policy_id=change.policy_id,
                policy_name=name, policy_revision=change.revision,
                data_classification=classification, edit_type=change.edit_type,
                config_snapshot=source, reason=change.reason,
                window={"share_pct": change.share_pct, "matching": change.matching,
                        "total": change.total}))
        return outcome.rollout_mode, outcome.enforced

    def rollout_preview(self, loaded: Any, target: str, subject: str | None
                        ) -> tuple[str, bool]:
        """(rollout_mode, enforced) that a request would get now, without counting toward
        auto-rollback: a simulation (SPEC §10) is not a governed request, and simulating
        refusals must never switch off a policy's enforcement for real traffic."""
        from gateway.policy.rollout import RolloutEngine, canary_enforces

        if self.rollout is None:
            self.rollout = RolloutEngine()
        status = self.rollout.status(loaded.policy_id)
        if (status is not None and status.revision == loaded.revision
                and status.rollback_until is not None
                and trio.current_time() < status.rollback_until):
            return "rollback", False
        stage = loaded.policy.rollout.stage_for(target)
        if stage.mode == "shadow":
            return "shadow", False
        if stage.mode == "canary":
            return "canary", canary_enforces(stage.percentage, loaded.policy_id,
                                             loaded.revision, subject, random.random())
        return "enforced", True

    def rollout_observe(self, governance: Any) -> None:
        """Hook for the final (output-stage) decision; the engine counts it at resolve time."""

    # --- escalation (SPEC §5.4) -----------------------------------------------------------------

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
