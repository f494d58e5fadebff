"""Durable policy events (docs/events.md): the background writer, its storage, and history queries.

`EventWriter.run` takes events from the `QueueSink` channel in batches (up to `batch_size`, or
whatever arrived within `batch_seconds` of the first) and writes each batch in one transaction
on a worker thread. When storage fails (locked, disk full, file removed) it keeps the batch and
retries with backoff; meanwhile the bounded channel fills and `emit` drops (and counts) new
events, so requests never wait. `drain` writes everything still held at shutdown.
"""

from __future__ import annotations

import base64
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
from gateway.errors import EventStorageError, HistoryQueryError
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


# --- history --------------------------------------------------------------------------------

FILTER_COLUMNS = ("project_id", "policy_id", "policy_target", "policy_user", "decision",
                  "event_type", "request_id")
#: Filters on a field kept in `extra` rather than in a column of its own (indexed in db.py).
_FILTER_EXPRESSIONS = {"request_id": "json_extract(extra, '$.request_id')"}
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    filters: Mapping[str, str] = field(default_factory=dict)
    since: str | None = None
    until: str | None = None
    limit: int = DEFAULT_LIMIT
    #: Only events with a smaller seq (the page after the one that ended at `before`).
    before: int | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Sequence[str]]) -> HistoryQuery:
        """From query parameters (each name to its values); raises HistoryQueryError."""
        allowed = {*FILTER_COLUMNS, "since", "until", "limit", "cursor"}
        values: dict[str, str] = {}
        for name, given in params.items():
            if name not in allowed:
                raise HistoryQueryError(f"unknown parameter '{name}'; known: {sorted(allowed)}")
            if len(given) != 1:
                raise HistoryQueryError(f"parameter '{name}' must be given once")
            values[name] = given[0]
        filters = {k: values[k] for k in FILTER_COLUMNS if k in values}
        if "event_type" in filters and filters["event_type"] not in EVENT_TYPES:
            raise HistoryQueryError(f"'event_type' must be one of {list(EVENT_TYPES)}")
        since = _timestamp(values["since"], "since") if "since" in values else None
        until = _timestamp(values["until"], "until") if "until" in values else None
        limit = DEFAULT_LIMIT
        if "limit" in values:
            text = values["limit"]
            if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
                raise HistoryQueryError(f"'limit' must be an integer from 1 to {MAX_LIMIT}")
            limit = int(text)
        before = decode_cursor(values["cursor"]) if "cursor" in values else None
        return cls(filters=filters, since=since, until=until, limit=limit, before=before)


def _timestamp(text: str, name: str) -> str:
    """RFC 3339 to the stored form (UTC, milliseconds, `Z`), so strings compare as times."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise HistoryQueryError(f"'{name}' must be an RFC 3339 time, "
                                "e.g. 2025-01-31T12:00:00Z") from None
    if moment.tzinfo is None:
        raise HistoryQueryError(f"'{name}' must carry a time zone (Z or +hh:mm)")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != "seq" or not number.isdigit():
            raise ValueError(text)
        return int(number)
    except (ValueError, UnicodeDecodeError):
        raise HistoryQueryError("'cursor' is not a cursor this API returned") from None


def history_where(query: HistoryQuery, mark: str, expressions: Mapping[str, str]
                  ) -> tuple[list[str], list[Any]]:
    """The WHERE terms and arguments of `query`; `mark` is the driver's placeholder and
    `expressions` the filters on fields kept in `extra` (each backend spells JSON its way)."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in query.filters.items():
        where.append(f"{expressions.get(column, column)} = {mark}")
        args.append(value)
    if query.since is not None:
        where.append(f"created_at >= {mark}")
        args.append(query.since)
    if query.until is not None:
        where.append(f"created_at < {mark}")
        args.append(query.until)
    if query.before is not None:
        where.append(f"seq < {mark}")
        args.append(query.before)
    return where, args


def history_page(rows: Sequence[Mapping[str, Any]], limit: int
                 ) -> tuple[list[dict[str, Any]], str | None]:
    """Events of the first `limit` rows (read with LIMIT limit + 1) and the next cursor."""
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = encode_cursor(rows[-1]["seq"]) if more and rows else None
    return [row_to_event(row) for row in rows], cursor


def query_history(db: sqlite_utils.Database, query: HistoryQuery
                  ) -> tuple[list[dict[str, Any]], str | None]:
    """Events newest first (by commit order) and the cursor of the next page, if any.

    Paging goes by `seq`, which only grows: events committed while a client pages are newer
    than its first page and never shift the pages after it, so there are no duplicates or gaps.
    """
    where, args = history_where(query, "?", _FILTER_EXPRESSIONS)
    sql = "SELECT * FROM policy_events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC LIMIT ?"
    args.append(query.limit + 1)
    return history_page(list(db.query(sql, args)), query.limit)
