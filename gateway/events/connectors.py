"""Connectors deliver stored policy events onward (docs/events.md): a JSON-lines file and a webhook.

Each connector is its own task that reads `policy_events` in `seq` order from its delivery
progress (table `event_deliveries`), delivers, then records the new progress. Reading from the
database rather than from the request path means a slow or dead destination only delays its
own progress: requests and other connectors never wait on it, and a restart resumes where the
last recorded delivery stopped. Delivery is at least once (an event delivered just before a
crash is delivered again); consumers dedupe on `event_id`.

Every worker process runs every connector task, but a task delivers only while its process holds
the connector's lease (gateway/events/leases.py); the others wait to take over, so a destination gets
each event from one worker at a time.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import orjson
import sqlite_utils
import trio

from gateway.db import open_database
from gateway.errors import (
    ConnectorConfigError,
    DatabaseUnavailable,
    SharedStateUnavailable,
    WebhookError,
)
from gateway.events.leases import (
    DEFAULT_LEASE_SECONDS,
    ConnectorLease,
    RedisConnectorLease,
    lease_owner_id,
)
from gateway.events.sink import RateLimitedLog
from gateway.events.store import row_to_event

log = logging.getLogger("gateway.events.sink")
#: What a failing event store raises: SQLite's errors, or PostgreSQL unreachable or refusing.
STORAGE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, DatabaseUnavailable)
#: What a failing lease store raises (the Redis lease: SharedStateUnavailable).
LEASE_ERRORS: tuple[type[Exception], ...] = (*STORAGE_ERRORS, SharedStateUnavailable)




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


# --- progress -------------------------------------------------------------------------------


class DeliveryLog:
    """A connector's view of the database: the next events to deliver and its progress."""

    def __init__(self, database_path: str, settings: ConnectorSettings) -> None:
        self.database_path = database_path
        self.settings = settings
        self._db: sqlite_utils.Database | None = None
        #: The newest seq a filtered `pending` looked past: with no match up to there, the
        #: progress moves on, so a rarely matching connector does not rescan the table.
        self.scanned = 0

    @property
    def db(self) -> sqlite_utils.Database:
        if self._db is None:
            self._db = open_database(self.database_path, check_same_thread=False,
                                     busy_timeout=5.0)
        return self._db

    def delivered_seq(self) -> int:
        row = self.db.execute("SELECT delivered_seq FROM event_deliveries WHERE connector = ?",
                              [self.settings.name]).fetchone()
        return int(row[0]) if row else 0

    def pending(self, after: int) -> list[tuple[int, dict[str, Any]]]:
        row = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM policy_events").fetchone()
        self.scanned = int(row[0])
        sql = "SELECT * FROM policy_events WHERE seq > ?"
        args: list[Any] = [after]
        if self.settings.project_id is not None:
            sql += " AND project_id = ?"
            args.append(self.settings.project_id)
        if self.settings.escalation_target is not None:
            sql += (" AND event_type = 'enforcement' AND EXISTS (SELECT 1 FROM json_each("
                    "json_extract(extra, '$.escalation_targets')) WHERE value = ?)")
            args.append(self.settings.escalation_target)
        sql += " ORDER BY seq LIMIT ?"
        args.append(self.settings.batch_size)
        return [(row["seq"], row_to_event(row)) for row in self.db.query(sql, args)]

    def record(self, seq: int, delivered: int, failures: int, error: str | None) -> None:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with self.db.conn:
            self.db.execute(
                "INSERT INTO event_deliveries(connector, delivered_seq, delivered, failures, "
                "last_error, updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(connector) DO "
                "UPDATE SET delivered_seq = MAX(delivered_seq, excluded.delivered_seq), "
                "delivered = delivered + excluded.delivered, "
                "failures = failures + excluded.failures, last_error = excluded.last_error, "
                "updated_at = excluded.updated_at",
                [self.settings.name, seq, delivered, failures, error, now])

    def close(self) -> None:
        if self._db is not None:
            self._db.conn.close()
            self._db = None


# --- destinations ---------------------------------------------------------------------------


class JsonLinesFile:
    """Appends one JSON event per line; when the file would pass `max_bytes` it becomes
    `<path>.1` (older ones shift to `.2` … `.<backups>`, the oldest is removed)."""

    def __init__(self, settings: ConnectorSettings) -> None:
        self.path = Path(settings.path)
        self.max_bytes = settings.max_bytes
        self.backups = settings.backups

    def write(self, events: Sequence[Mapping[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        size = self.path.stat().st_size if self.path.exists() else 0
        chunk: list[bytes] = []
        for event in events:
            line = orjson.dumps(event) + b"\n"
            if size and size + len(line) > self.max_bytes:  # a longer line gets a file alone
                self._append(chunk)
                chunk, size = [], 0
                self._rotate()
            chunk.append(line)
            size += len(line)
        self._append(chunk)

    def _append(self, lines: list[bytes]) -> None:
        if not lines:
            return
        with open(self.path, "ab") as file:
            file.write(b"".join(lines))
            file.flush()
            os.fsync(file.fileno())  # progress is recorded next: the lines must be on disk

    def _rotate(self) -> None:
        if self.backups < 1:
            self.path.unlink(missing_ok=True)
            return
        for index in range(self.backups, 0, -1):
            older = Path(f"{self.path}.{index}")
            newer = Path(f"{self.path}.{index - 1}") if index > 1 else self.path
            if newer.exists():
                os.replace(newer, older)




class Webhook:
    """One POST per event, JSON body, custom headers; 2xx is delivered, anything else retried."""

    def __init__(self, settings: ConnectorSettings, client: httpx2.AsyncClient) -> None:
        self.settings = settings
        self.client = client

    async def post(self, event: Mapping[str, Any]) -> None:
        try:
            response = await self.client.post(
                self.settings.url, content=orjson.dumps(event), timeout=self.settings.timeout,
                headers={"content-type": "application/json",
                         "idempotency-key": str(event["event_id"]), **self.settings.headers})
        except httpx2.HTTPError as exc:
            raise WebhookError(f"{type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            raise WebhookError(f"answered {response.status_code}")


# --- the task -------------------------------------------------------------------------------


def backoff(attempt: int, initial: float, maximum: float, rand: Callable[[], float]) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(maximum, initial * 2^attempt)]."""
    return rand() * min(maximum, initial * (2 ** min(attempt, 30)))


class ConnectorTask:
    """Delivers one connector's events forever; `wake()` after new events were written."""

    def __init__(self, database_path: str, settings: ConnectorSettings, *,
                 rand: Callable[[], float] = random.random, owner: str | None = None,
                 clock: Callable[[], float] = time.time, redis: Any = None,
                 pg: Any = None) -> None:
        self.settings = settings
        owner = owner or lease_owner_id()
        self.progress: Any
        self.lease: ConnectorLease
        if pg is not None:  # events, progress and lease shared by the replicas in PostgreSQL
            from gateway.events.pg_delivery import PgConnectorLease, PgDeliveryLog

            self.progress = PgDeliveryLog(pg, settings)
            self.lease = PgConnectorLease(pg, settings.name, owner,
                                          ttl=settings.lease_seconds, clock=clock)
        else:
            self.progress = DeliveryLog(database_path, settings)
            # With Redis configured the claim lives there (replicas on several machines).
            self.lease = (ConnectorLease(database_path, settings.name, owner,
                                         ttl=settings.lease_seconds, clock=clock)
                          if redis is None else
                          RedisConnectorLease(database_path, settings.name, owner, redis,
                                              ttl=settings.lease_seconds, clock=clock))
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
        after = await self._delivered_seq()
        while True:
                batch = await self._read(after)
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

    async def _delivered_seq(self) -> int:
        attempt = 0
        while True:
            try:
                return await trio.to_thread.run_sync(self.progress.delivered_seq)
            except STORAGE_ERRORS as exc:
                self.progress.close()
                self._log.warning("connector %s cannot read its progress: %s",
                                  self.settings.name, exc)
                await trio.sleep(backoff(attempt, 0.1, 5.0, self._rand))
                attempt += 1

    async def _read(self, after: int) -> list[tuple[int, dict[str, Any]]]:
        attempt = 0
        while True:
            try:
                return await trio.to_thread.run_sync(self.progress.pending, after)
            except STORAGE_ERRORS as exc:
                self.progress.close()
                self._log.warning("connector %s cannot read events: %s", self.settings.name, exc)
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
