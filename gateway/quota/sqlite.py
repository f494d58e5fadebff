"""Exact quotas on a SQLite file of their own, shared by every worker process (docs/quotas.md).

The counters live beside the gateway's database (`quota_database_path`), not in it: the event
writer's batches hold the database's write lock for milliseconds, and admission would queue
behind them. A file created by this version takes over the counters of the database once.

Each admission is one `BEGIN IMMEDIATE` transaction: it takes SQLite's write lock first, gives
back reservations whose process died (expired), reads the counters of every applicable limit,
and either refuses or adds 1 request and the token estimate to all of them. Because the check and
the reservation happen under one lock, N+k concurrent requests against a limit of N admit exactly
N, whichever process they reach. Settlement swaps the estimate for the real usage; release gives
the reservation back. Admission and settlement run on the event loop (each about 0.1 ms) and
never block it: while another connection holds the write lock they sleep and try again.
Opening connections, checkpoints and usage reports run in threads (`trio.to_thread`) behind a
capacity limiter. A request without limits never touches the database.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import trio

from gateway.errors import QuotaUnavailable
from gateway.quota.files import quota_database_path
from gateway.quota.limits import (
    COUNTED_UNITS,
    PROJECT,
    Limit,
    QuotaRequest,
    QuotaSettings,
    Reservation,
    Usage,
    first_exhausted,
    quota_refusal,
    rate_limit_headers,
    remaining_field,
    settings_from_config,
    window_reset,
    window_start,
)
from gateway.quota.sqlite_file import begin_immediate, connect, subject_key, usage_report

log = logging.getLogger("gateway.quota.limits")

#: Settlements between two WAL checkpoints of the quota file.
CHECKPOINT_EVERY = 1000
#: How long an admission or a settlement waits for SQLite's write lock before it fails.
LOCK_WAIT_SECONDS = 30.0

#: (project_id, subject_kind, subject_id, unit, window, window_start)
CounterKey = tuple[str, str, str, str, str, int]

_SELECT = ("SELECT used FROM quota_counters WHERE project_id = ? AND subject_kind = ? "
           "AND subject_id = ? AND unit = ? AND window = ? AND window_start = ?")
_ADD = ("INSERT INTO quota_counters (project_id, subject_kind, subject_id, unit, window, "
        "window_start, used) VALUES (?, ?, ?, ?, ?, ?, max(?, 0)) "
        "ON CONFLICT DO UPDATE SET used = max(used + excluded.used, 0)")
# `excluded.used` above is clamped at 0, so negative adjustments go through this one instead.
_ADJUST = ("UPDATE quota_counters SET used = max(used + ?, 0) WHERE project_id = ? "
           "AND subject_kind = ? AND subject_id = ? AND unit = ? AND window = ? "
           "AND window_start = ?")


@dataclass(frozen=True, slots=True)
class _Held:
    """What one reservation holds: its id and the counters it added to."""

    id: str
    counters: tuple[tuple[CounterKey, str], ...]  # (key, unit)
    tokens: int


class SqliteQuotaStore:
    """`QuotaStore` on a SQLite file. `clock` returns the current UTC time (injected in tests)."""

    def __init__(self, path: str | os.PathLike[str], settings: QuotaSettings | None = None, *,
                 clock: Callable[[], datetime] | None = None,
                 migrate_from: str | os.PathLike[str] | None = None) -> None:
        self.path = str(path)
        #: The database whose counters a new quota file takes over (earlier versions kept them
        #: there).
        self.migrate_from = None if migrate_from is None else str(migrate_from)
        #: Commits since the last WAL checkpoint (see `_after`).
        self._commits = 0
        self.settings = settings or QuotaSettings()
        self.clock = clock or (lambda: datetime.now(UTC))
        self._limiter: trio.CapacityLimiter | None = None
        self._idle: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        #: Held by the task opening a connection for the pool (`_open_connection`).
        self._opening: trio.Lock | None = None
        #: The connection of the WAL checkpoints (`_checkpoint`), opened by the first.
        self._checkpointer: sqlite3.Connection | None = None
        #: True while a checkpoint runs (in a thread).
        self._checkpointing = False

    @classmethod
    def from_config(cls, config: Any) -> SqliteQuotaStore:
        return cls(quota_database_path(config), settings_from_config(config),
                   migrate_from=config.database_path)

    async def usage_report(self, project_id: str, now: datetime, *, budget: Any = None,
                           user_quota: Any = None, top: int = 10) -> dict[str, Any]:
        """`usage_report` on this store's file (the management API's usage endpoint)."""
        def read() -> dict[str, Any]:
            with self.transaction() as conn:
                return usage_report(conn, project_id, now, budget=budget,
                                    user_quota=user_quota, top=top)

        return await self._run(read)

    # --- the QuotaStore protocol ---------------------------------------------------------------

    async def admit(self, request: QuotaRequest) -> Reservation:
        limits = request.limits()
        if not limits:
            return Reservation(request=request)
        try:
            reservation: Reservation = await self._on_loop(self.admit_sync, request, limits)
        except _LockTimeout as exc:
            raise QuotaUnavailable(
                "Quotas cannot be checked right now (the quota file stayed locked by another "
                "process); nothing is admitted until it is free. Retry shortly.",
                headers={"retry-after": "1"}) from exc
        return reservation

    async def settle(self, reservation: Reservation, input_tokens: int, output_tokens: int
                     ) -> None:
        if reservation.token is not None:
            await self._after(self.settle_sync, reservation.token,
                              max(0, input_tokens) + max(0, output_tokens))

    async def release(self, reservation: Reservation) -> None:
        if reservation.token is not None:
            await self._after(self.release_sync, reservation.token)

    async def _after(self, fn: Callable[..., Any], *args: Any) -> None:
        """Settle or release before the answer ends, so that a client sending its next request
        at once sees this one's usage in its `x-ratelimit-remaining-*` headers. Shielded: a
        client that leaves does not leave the counters wrong. A failure is logged; the
        reservation then expires like one of a dead process."""
        with trio.CancelScope(shield=True):
            try:
                await self._on_loop(fn, *args)
                self._commits += 1
                if self._commits >= CHECKPOINT_EVERY and not self._checkpointing:
                    # The loop's connections never checkpoint (an fsync); a thread does it,
                    # one at a time.
                    self._commits = 0
                    self._checkpointing = True
                    try:
                        await self._run(self._checkpoint)
                    finally:
                        self._checkpointing = False
            except Exception:
                log.exception("quota settlement failed; the reservation will expire")

    async def _on_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args, wait=False)`: one transaction on the event loop, about 0.1 ms when the
        write lock is free. While another connection holds the lock (another worker), the
        task sleeps on the loop and tries again (1 to 5 ms apart) instead of waiting in a
        thread: a transaction run in a thread needs the interpreter lock back between its
        statements, which a busy event loop hands over only every few milliseconds, so it held
        SQLite's write lock for tens of milliseconds and pushed every admission behind it into
        a thread too. Only opening a connection runs in a thread."""
        started = trio.current_time()
        while True:
            try:
                return fn(*args, wait=False)
            except _NoIdleConnection:
                if await self._open_connection(started + LOCK_WAIT_SECONDS):
                    continue
            except _LockBusy:
                pass
            waited = trio.current_time() - started
            if waited > LOCK_WAIT_SECONDS:
                raise _LockTimeout(f"the quota file stayed locked for {waited:.0f} s")
            # Quota transactions hold the lock for about 0.1 ms; a sleep lasts at least a
            # millisecond here (the resolution of the loop's poller).
            await trio.sleep(min(max(waited, 0.0005), 0.005))

    async def _open_connection(self, deadline: float) -> bool:
        """Add a connection to the pool, in a thread (one task at a time opens one, and the
        others use it); False when a new file's schema could not be made for the lock by
        `deadline` (each caller waits for it until its own deadline, not for the others')."""
        if self._opening is None:
            self._opening = trio.Lock()
        async with self._opening:
            with self._lock:
                if self._idle:
                    return True
            left = deadline - trio.current_time()
            if left <= 0:
                return False
            try:
                await self._run(self._add_idle_connection, left)
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    return False
                raise
        return True

    def _add_idle_connection(self, lock_wait: float) -> None:
        conn = connect(self.path, self.migrate_from, lock_wait=lock_wait)
        with self._lock:
            self._all.append(conn)
            self._idle.append(conn)

    def _checkpoint(self) -> None:
        # On a connection of its own: one taken from the pool would leave the loop without
        # one for as long as the checkpoint runs.
        # Opened plainly: the pool's connections made the schema, and making sure of it again
        # would hold the write lock while this thread waits for the interpreter lock.
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(self.path, isolation_level=None,
                                                 check_same_thread=False)
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # --- blocking implementation (also used directly by tests and the bench) -------------------

    def admit_sync(self, request: QuotaRequest, limits: Sequence[Limit] | None = None, *,
                   wait: bool = True) -> Reservation:
        """Admit or refuse; with `wait=False`, `_LockBusy` when the write lock is taken."""
        limits = request.limits() if limits is None else limits
        now = self.clock()
        keyed = [(limit, self._key(request.project_id, limit, now)) for limit in limits]
        held: _Held | None = None
        with self._transaction(wait=wait) as conn:
            self._expire(conn, now.timestamp())
            before = []
            for limit, key in keyed:
                row = conn.execute(_SELECT, key).fetchone()
                before.append(Usage(limit, row[0] if row else 0, window_reset(limit.window, now)))
            exhausted = first_exhausted(before)
            if exhausted is None:
                held = self._reserve(conn, request.estimated_tokens, keyed, now)
        if held is None:  # raised after the commit: expired reservations stay given back
            raise quota_refusal(exhausted, before, now)  # type: ignore[arg-type]
        tokens = held.tokens
        after = [Usage(u.limit, u.used + (1 if u.limit.unit in COUNTED_UNITS else tokens), u.reset)
                 for u in before]
        return Reservation(request=request, remaining=remaining_field(after),
                           headers=rate_limit_headers(after), token=held, tokens_reserved=tokens)

    def _reserve(self, conn: sqlite3.Connection, tokens: int,
                 keyed: Sequence[tuple[Limit, CounterKey]], now: datetime) -> _Held:
        held = _Held(os.urandom(12).hex(), tuple((key, limit.unit) for limit, key in keyed),
                     tokens)
        for key, unit in held.counters:
            conn.execute(_ADD, (*key, 1 if unit in COUNTED_UNITS else tokens))
        conn.execute(
            "INSERT INTO quota_reservations (id, expires_at, tokens, counters) "
            "VALUES (?, ?, ?, ?)",
            (held.id, now.timestamp() + self.settings.reservation_ttl_seconds, tokens,
             orjson.dumps(held.counters)))
        return held

    def settle_sync(self, held: _Held, tokens: int, *, wait: bool = True) -> None:
        with self._transaction(wait=wait) as conn:
            if self._forget(conn, held.id):
                self._apply(conn, held.counters, requests=0, tokens=tokens - held.tokens)
            else:  # expired and given back meanwhile: count what was really used
                self._apply(conn, held.counters, requests=1, tokens=tokens)

    def release_sync(self, held: _Held, *, wait: bool = True) -> None:
        with self._transaction(wait=wait) as conn:
            if self._forget(conn, held.id):
                self._apply(conn, held.counters, requests=-1, tokens=-held.tokens)

    def expire_sync(self) -> int:
        """Give back every expired reservation now; the number given back."""
        with self._transaction() as conn:
            return self._expire(conn, self.clock().timestamp())

    def close(self) -> None:
        with self._lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
            for conn in self._all:
                conn.close()
            self._all.clear()
            self._idle.clear()

    # --- internals -----------------------------------------------------------------------------

    def _key(self, project_id: str, limit: Limit, now: datetime) -> CounterKey:
        subject = project_id if limit.kind == PROJECT else limit.subject
        return (subject_key(project_id), limit.kind, subject_key(subject), limit.unit,
                limit.window, int(window_start(limit.window, now).timestamp()))

    def _expire(self, conn: sqlite3.Connection, now: float) -> int:
        rows = conn.execute("SELECT id, tokens, counters FROM quota_reservations "
                            "WHERE expires_at < ?", (now,)).fetchall()
        for reservation_id, tokens, counters in rows:
            conn.execute("DELETE FROM quota_reservations WHERE id = ?", (reservation_id,))
            held = tuple((tuple(key), unit) for key, unit in orjson.loads(counters))
            self._apply(conn, held, requests=-1, tokens=-tokens)  # type: ignore[arg-type]
        return len(rows)

    @staticmethod
    def _forget(conn: sqlite3.Connection, reservation_id: str) -> bool:
        return conn.execute("DELETE FROM quota_reservations WHERE id = ?",
                            (reservation_id,)).rowcount > 0

    @staticmethod
    def _apply(conn: sqlite3.Connection, counters: Sequence[tuple[CounterKey, str]], *,
               requests: int, tokens: int) -> None:
        for key, unit in counters:
            delta = requests if unit in COUNTED_UNITS else tokens
            if delta > 0:
                conn.execute(_ADD, (*key, delta))
            elif delta < 0:
                conn.execute(_ADJUST, (delta, *key))

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._limiter is None:
            self._limiter = trio.CapacityLimiter(self.settings.threads)
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction on the quota file (reads that must see every commit)."""
        return self._transaction()

    @contextmanager
    def _transaction(self, *, wait: bool = True) -> Iterator[sqlite3.Connection]:
        conn = self._connection(create=wait)
        try:
            if wait:
                begin_immediate(conn)
            else:
                try:
                    conn.execute("BEGIN IMMEDIATE")  # busy_timeout is 0: answers at once
                except sqlite3.OperationalError as exc:
                    if "locked" in str(exc) or "busy" in str(exc):
                        raise _LockBusy from None
                    raise
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            with self._lock:
                self._idle.append(conn)

    def _connection(self, *, create: bool = True) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self.path == ":memory:" and self._all:
                return self._all[0]  # one shared in-memory database (tests only)
        if not create:  # opening one may wait for the schema lock: a thread does that
            raise _NoIdleConnection
        conn = connect(self.path, self.migrate_from)
        with self._lock:
            self._all.append(conn)
        return conn



class _LockBusy(Exception):
    """Another connection holds SQLite's write lock right now (admission without waiting)."""


class _LockTimeout(sqlite3.OperationalError):
    """The write lock stayed taken for `LOCK_WAIT_SECONDS` (another process holds it)."""


class _NoIdleConnection(Exception):
    """Every connection of the pool is in use (by a thread): a new one must be opened first."""
