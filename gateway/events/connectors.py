"""Connectors deliver stored policy events onward (docs/events.md): a JSON-lines file and a webhook.

Each connector is its own task (`ConnectorTask`) that reads `policy_events` in `seq` order from
its delivery progress (gateway/events/delivery_log.py, or pg_delivery.py with PostgreSQL),
delivers to its destination (gateway/events/destinations.py), then records the new progress.
Reading from the database rather than from the request path means a slow or dead destination
only delays its own progress: requests and other connectors never wait on it, and a restart
resumes where the last recorded delivery stopped. Delivery is at least once (an event delivered
just before a crash is delivered again); consumers dedupe on `event_id`.

Every worker process runs every connector task, but a task delivers only while its process holds
the connector's lease (gateway/events/leases.py); the others wait to take over, so a destination
gets each event from one worker at a time.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx2
import trio

from gateway.errors import DatabaseUnavailable, SharedStateUnavailable, WebhookError
from gateway.events.connector_settings import ConnectorSettings
from gateway.events.delivery_log import DeliveryLog
from gateway.events.destinations import JsonLinesFile, Webhook
from gateway.events.leases import ConnectorLease, RedisConnectorLease, lease_owner_id
from gateway.events.sink import RateLimitedLog

log = logging.getLogger("gateway.events.sink")
#: What a failing event store raises: SQLite's errors, or PostgreSQL unreachable or refusing.
STORAGE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, DatabaseUnavailable)
#: What a failing lease store raises (the Redis lease: SharedStateUnavailable).
LEASE_ERRORS: tuple[type[Exception], ...] = (*STORAGE_ERRORS, SharedStateUnavailable)
Read = TypeVar("Read")


def backoff(attempt: int, initial: float, maximum: float, rand: Callable[[], float]) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(maximum, initial * 2^attempt)]."""
    return rand() * min(maximum, initial * (2 ** min(attempt, 30)))


def _progress_and_lease(database_path: str, settings: ConnectorSettings, owner: str, *,
                        clock: Callable[[], float], redis: Any, pg: Any
                        ) -> tuple[Any, ConnectorLease]:
    """Where a connector keeps its progress and its lease: both in PostgreSQL when the replicas
    share it; else progress in the SQLite events database and the lease beside it, or in Redis
    when configured (replicas on several machines)."""
    if pg is not None:
        from gateway.events.pg_delivery import PgConnectorLease, PgDeliveryLog

        return (PgDeliveryLog(pg, settings),
                PgConnectorLease(pg, settings.name, owner, ttl=settings.lease_seconds,
                                 clock=clock))
    lease = (ConnectorLease(database_path, settings.name, owner, ttl=settings.lease_seconds,
                            clock=clock)
             if redis is None else
             RedisConnectorLease(database_path, settings.name, owner, redis,
                                 ttl=settings.lease_seconds, clock=clock))
    return DeliveryLog(database_path, settings), lease


class ConnectorTask:
    """Delivers one connector's events forever; `wake()` after new events were written."""

    def __init__(self, database_path: str, settings: ConnectorSettings, *,
                 rand: Callable[[], float] = random.random, owner: str | None = None,
                 clock: Callable[[], float] = time.time, redis: Any = None,
                 pg: Any = None) -> None:
        self.settings = settings
        self.progress, self.lease = _progress_and_lease(
            database_path, settings, owner or lease_owner_id(), clock=clock, redis=redis, pg=pg)
        self.delivered = 0
        self.failures = 0
        self._rand = rand
        self._wakeup = trio.Event()
        self._log = RateLimitedLog()
        self._cancel = trio.CancelScope()

    def wake(self) -> None:
        self._wakeup.set()

    def stop(self) -> None:
        """Stop delivering (shutdown); what was delivered is recorded, the rest waits."""
        self._cancel.cancel()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        with self._cancel:
            await self._run()

    async def _run(self) -> None:
        client = httpx2.AsyncClient(trust_env=False) if self.settings.type == "webhook" else None
        renew_every = self.settings.lease_seconds / 3
        try:
            while True:
                if await self._claim():
                    with trio.CancelScope() as holding:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._keep_lease, holding, renew_every)
                            await self._deliver(client)
                    self._log.warning("connector %s: lease lost, another worker delivers",
                                      self.settings.name)
                await trio.sleep(renew_every)
        finally:
            with trio.CancelScope(shield=True):
                if client is not None:
                    await client.aclose()
                if self.lease.expires_at is not None:
                    await self._release()
                self.lease.close()
                self.progress.close()

    async def _claim(self) -> bool:
        try:
            return await trio.to_thread.run_sync(self.lease.claim)
        except LEASE_ERRORS as exc:
            # keep delivering only while the last claim lasts
            self.lease.close()
            self._log.warning("connector %s cannot renew its lease: %s", self.settings.name, exc)
            return self.lease.held()

    async def _keep_lease(self, holding: trio.CancelScope, renew_every: float) -> None:
        # Renewing at a third of the lease leaves two tries before it could run out.
        while True:
            await trio.sleep(renew_every)
            if not await self._claim():
                holding.cancel()
                return

    async def _release(self) -> None:
        try:
            await trio.to_thread.run_sync(self.lease.release)
        except LEASE_ERRORS as exc:
            # it expires on its own; the takeover just waits for it
            log.warning("connector %s cannot release its lease: %s", self.settings.name, exc)

    async def _deliver(self, client: httpx2.AsyncClient | None) -> None:
        """Deliver from the stored progress on, forever (until the lease is lost): another
        worker may have delivered since this one last held the lease."""
        after = await self._from_storage("read its progress", self.progress.delivered_seq)
        while True:
            batch = await self._from_storage("read events", self.progress.pending, after)
            if not batch and self.progress.scanned > after:
                after = self.progress.scanned  # nothing of ours up to there
                await self._record(after, 0, 0, None)
            if not batch:
                self._wakeup = trio.Event()
                with trio.move_on_after(self.settings.poll_seconds):
                    await self._wakeup.wait()
                continue
            if client is None:
                await self._deliver_file([e for _, e in batch])
                after = batch[-1][0]
                await self._record(after, len(batch), 0, None)
            else:
                for seq, event in batch:
                    await self._deliver_webhook(Webhook(self.settings, client), event)
                    after = seq
                    await self._record(after, 1, 0, None)

    async def _from_storage(self, what: str, read: Callable[..., Read], *args: Any) -> Read:
        """`read(*args)` on a worker thread, retried with backoff until the store answers:
        delivery cannot go on without what it reads."""
        attempt = 0
        while True:
            try:
                return await trio.to_thread.run_sync(read, *args)
            except STORAGE_ERRORS as exc:
                self.progress.close()
                self._log.warning("connector %s cannot %s: %s", self.settings.name, what, exc)
                await trio.sleep(backoff(attempt, 0.1, 5.0, self._rand))
                attempt += 1

    async def _record(self, seq: int, delivered: int, failures: int, error: str | None) -> None:
        self.delivered += delivered
        try:
            await trio.to_thread.run_sync(self.progress.record, seq, delivered, failures, error)
        except STORAGE_ERRORS as exc:  # progress is re-recorded with the next delivery
            self.progress.close()
            self._log.warning("connector %s cannot record progress: %s", self.settings.name, exc)

    async def _deliver_file(self, events: list[dict[str, Any]]) -> None:
        destination = JsonLinesFile(self.settings)
        attempt = 0
        while True:
            try:
                await trio.to_thread.run_sync(destination.write, events)
                return
            except OSError as exc:
                await self._failed(attempt, str(exc))
                attempt += 1

    async def _deliver_webhook(self, hook: Webhook, event: dict[str, Any]) -> None:
        attempt = 0
        while True:
            try:
                await hook.post(event)
                return
            except WebhookError as exc:
                await self._failed(attempt, str(exc))
                attempt += 1

    async def _failed(self, attempt: int, error: str) -> None:
        self.failures += 1
        self._log.warning("connector %s: delivery failed (%s); retrying", self.settings.name,
                          error)
        await trio.sleep(backoff(attempt, self.settings.retry_initial, self.settings.retry_max,
                                 self._rand))
