"""Durable policy events (docs/events.md): the background writer and its storage (history
queries: `gateway.events.history_query`).

`EventWriter.run` takes events from the `QueueSink` channel in batches (up to `batch_size`, or
whatever arrived within `batch_seconds` of the first) and writes each batch in one transaction
on a worker thread. When storage fails (locked, disk full, file removed) it keeps the batch and
retries with backoff; meanwhile the bounded channel fills and `emit` drops (and counts) new
events, so requests never wait. `drain` writes everything still held at shutdown.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
import sqlite_utils
import trio

from gateway.db import (
    EVENT_BOOL_COLUMNS,
    EVENT_COLUMNS,
    EVENT_JSON_COLUMNS,
    open_database,
    write_transaction,
)
from gateway.errors import EventStorageError
from gateway.events.sink import COMMON_FIELDS, EVENT_FIELDS, QueueSink, RateLimitedLog

log = logging.getLogger("gateway.events.sink")

EVENT_TYPES = ("enforcement", "simulation", "revision")
_COLUMN_SET = frozenset(EVENT_COLUMNS)
_JSON_COLUMN_SET = frozenset(EVENT_JSON_COLUMNS)
_BOOL_COLUMN_SET = frozenset(EVENT_BOOL_COLUMNS)
#: One statement for every batch: plain `executemany` on prepared rows, without the per-row
#: column discovery of a generic insert (the writer's thread holds the GIL for less).
_INSERT_EVENT = (f"INSERT OR IGNORE INTO policy_events ({', '.join(EVENT_COLUMNS)}) "
                 f"VALUES ({', '.join('?' * len(EVENT_COLUMNS))})")


@dataclass(frozen=True, slots=True)
class EventSettings:
    """The `[events]` section (see docs/events.md)."""

    queue_capacity: int = 10_000
    batch_size: int = 500
    batch_seconds: float = 0.05
    #: Longest wait for the database lock on one write attempt before backing off.
    busy_timeout: float = 1.0
    retry_initial: float = 0.05
    retry_max: float = 2.0
    #: Longest time graceful shutdown spends writing what the queue still holds.
    drain_timeout: float = 10.0
    #: Newest events also kept in memory (tests, diagnostics); 0 keeps none.
    recent: int = 1_000  # about 4 KB each: 10,000 held 40 MB per worker
    connectors: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> EventSettings:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown [events] key(s) {sorted(unknown)}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for name in ("queue_capacity", "batch_size", "recent"):
            if name in data:
                values[name] = int(data[name])
        for name in ("batch_seconds", "busy_timeout", "retry_initial", "retry_max",
                     "drain_timeout"):
            if name in data:
                values[name] = float(data[name])
        settings = cls(**values, connectors=tuple(dict(c) for c in data.get("connectors", ())))
        if settings.queue_capacity < 1 or settings.batch_size < 1 or settings.recent < 0:
            raise ValueError("events.queue_capacity and events.batch_size must be at least 1")
        return settings


# --- rows -----------------------------------------------------------------------------------


def event_values(event: Mapping[str, Any]) -> tuple[Any, ...]:
    """One `policy_events` row as values in `EVENT_COLUMNS` order: the documented event fields in
    their columns, anything else in `extra`."""
    extra = {k: v for k, v in event.items() if k not in _COLUMN_SET}
    values: list[Any] = []
    for column in EVENT_COLUMNS:
        value = (extra or None) if column == "extra" else event.get(column)
        if value is not None:
            if column in _JSON_COLUMN_SET:
                value = orjson.dumps(value).decode()
            elif column in _BOOL_COLUMN_SET:
                value = int(bool(value))
        values.append(value)
    return tuple(values)


def event_to_row(event: Mapping[str, Any]) -> dict[str, Any]:
    """One `policy_events` row by column name (see `event_values`)."""
    return dict(zip(EVENT_COLUMNS, event_values(event), strict=True))


def row_to_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """The event as it was emitted: every documented field of its class (null when it was null or
    absent), and any other field that was given."""
    event: dict[str, Any] = dict.fromkeys(EVENT_FIELDS.get(row["event_type"], COMMON_FIELDS))
    for column in EVENT_COLUMNS:
        value = row[column]
        if value is None:
            continue
        if column in EVENT_JSON_COLUMNS:
            value = orjson.loads(value)
        elif column in EVENT_BOOL_COLUMNS:
            value = bool(value)
        if column == "extra":
            event.update(value)
        else:
            event[column] = value
    return event


# --- storage --------------------------------------------------------------------------------


class EventStorage(Protocol):
    """What the writer needs of a store: `EventStore` (SQLite) or `PgEventStore` (PostgreSQL,
    gateway/events/pg_store.py). Both are called on a worker thread, one batch at a time."""

    def write(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Commit `events` in one transaction, or raise EventStorageError."""

    def close(self) -> None:
        """Release what the store holds (shutdown)."""


class EventStore:
    """The writer's own connection. Reopened after any failure, so a database file that was
    removed or replaced is written again once the path is usable."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 1.0) -> None:
        self.path = str(path)
        self.busy_timeout = busy_timeout
        self._db: sqlite_utils.Database | None = None
        self._inode: int | None = None

    def _open(self) -> sqlite_utils.Database:
        db = open_database(self.path, check_same_thread=False, busy_timeout=self.busy_timeout)
        self._inode = None if self.path == ":memory:" else os.stat(self.path).st_ino
        return db

    def write(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Insert `events` in one transaction (a retried event_id is ignored: at most once)."""
        try:
            if self._db is not None and self._inode is not None:
                # A removed file would swallow writes into an unlinked inode: treat as failure.
                if os.stat(self.path).st_ino != self._inode:
                    raise FileNotFoundError(f"{self.path} was replaced")
            if self._db is None:
                self._db = self._open()
            with write_transaction(self._db) as db:
                db.conn.executemany(_INSERT_EVENT, [event_values(e) for e in events])
        except (sqlite3.Error, OSError) as exc:
            if not _is_busy(exc):  # a lock passes; anything else may need a fresh connection
                self.close()
            raise EventStorageError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.conn.close()
            except sqlite3.Error:
                pass
            self._db = None


def _is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


# --- the writer -----------------------------------------------------------------------------


class EventWriter:
    """Background task draining `sink` into `store`. Counters: `written` events, `failures`
    (write attempts that failed), `lost` (events held at shutdown that could not be written)."""

    def __init__(self, sink: QueueSink, store: EventStorage, settings: EventSettings) -> None:
        self.sink = sink
        self.store = store
        self.settings = settings
        self.written = 0
        self.failures = 0
        self.lost = 0
        #: Why the last write attempt failed; None once a write succeeds (`/readyz` shows it).
        self.last_error: str | None = None
        #: Events taken from the channel and not yet committed (kept across retries).
        self._batch: list[dict[str, Any]] = []
        self._cancel = trio.CancelScope()
        self._stopped = trio.Event()
        self._fail_log = RateLimitedLog()
        #: Called after each committed batch (connectors wake up to deliver it).
        self.on_written: list[Callable[[], None]] = []

    @property
    def held(self) -> int:
        """Events accepted and not yet in the database."""
        return len(self._batch) + self.sink.depth

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            with self._cancel:
                await self._loop()
        finally:
            self._stopped.set()

    async def _loop(self) -> None:
        receive = self.sink.receive
        while True:
            if not self._batch:
                try:
                    self._batch.append(await receive.receive())
                except trio.EndOfChannel:
                    return
                # The rest of the batch gathers in the channel: no wake-up for each event.
                with trio.move_on_after(self.settings.batch_seconds):
                    await self.sink.wait_for_more(
                        self.settings.batch_size - 1 - self.sink.depth)
            while len(self._batch) < self.settings.batch_size:  # whatever queued meanwhile
                try:
                    self._batch.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await self._write_with_retry(deadline=None)

    async def _write_with_retry(self, deadline: float | None) -> bool:
        delay = self.settings.retry_initial
        while True:
            try:
                # Not abandoned on cancel: a transaction is either committed or not, never cut.
                await trio.to_thread.run_sync(self.store.write, self._batch)
            except EventStorageError as exc:
                self.failures += 1
                self.last_error = str(exc)
                self._fail_log.warning("writing %d policy events failed (%s); retrying, %d "
                                       "events held", len(self._batch), exc, self.held)
                if deadline is not None and trio.current_time() + delay > deadline:
                    return False
                await trio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max)
                continue
            self.written += len(self._batch)
            self.last_error = None
            self._batch = []
            for callback in self.on_written:
                callback()
            return True

    async def drain(self) -> None:
        """Graceful shutdown: stop the task, then write everything held within drain_timeout."""
        self.sink.close()
        self._cancel.cancel()
        with trio.CancelScope(shield=True):
            await self._stopped.wait()
            deadline = trio.current_time() + self.settings.drain_timeout
            while True:
                while len(self._batch) < self.settings.batch_size:
                    try:
                        self._batch.append(self.sink.receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                if not self._batch:
                    break
                if not await self._write_with_retry(deadline):
                    self.lost = self.held
                    log.error("shutdown: %d policy events could not be written and are lost",
                              self.lost)
                    self._batch = []
                    break
            self.store.close()
