"""Policy events in PostgreSQL, shared by every replica: the writer's store and history reads.

The writer (`gateway.events.store.EventWriter`) is the same for both backends; only its store
differs. `PgEventStore.write` COPYs a batch into a staging table and inserts it from there, in
one transaction on a pooled connection (a worker thread), so queue bound, drop counters,
retries and drain on SIGTERM are exactly those of the SQLite writer.

Commit order is seq order. Every batch transaction takes one transaction-scoped advisory lock
before its INSERT draws its `seq` values; the lock is released after the commit is visible.
So when a reader sees a row, every row with a smaller `seq` is already visible too: a cursor on
`seq` (history pages, `events tail`, connector progress) can never step past a row that commits
late, on any replica. The price is that the replicas' INSERTs take turns (the COPY runs before
the lock), which costs little because each one carries a whole batch (docs/performance.md).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from gateway.db import EVENT_COLUMNS
from gateway.errors import DatabaseUnavailable, EventStorageError
from gateway.events.history_query import HistoryQuery, history_page, history_where
from gateway.events.store import EventStorage, EventStore, event_to_row
from gateway.storage.postgres import Postgres

log = logging.getLogger("gateway.events.sink")

#: An arbitrary, fixed key for `pg_advisory_xact_lock`: event inserts commit one at a time.
EVENT_ORDER_LOCK = 7_315_402_119
_COLUMN_LIST = ", ".join(EVENT_COLUMNS)
_ROW_MARKS = "(" + ", ".join(["%s"] * len(EVENT_COLUMNS)) + ")"
#: History filters on a field kept in `extra` (indexed by the PostgreSQL schema).
_PG_EXPRESSIONS = {"request_id": "((extra::jsonb) ->> 'request_id')"}


#: Per connection, emptied at every commit; created on first use by each pooled connection.
_STAGING_TABLE = (f"CREATE TEMP TABLE IF NOT EXISTS policy_events_batch ON COMMIT DELETE ROWS "
                  f"AS SELECT {_COLUMN_LIST} FROM policy_events WITH NO DATA")
_COPY_SQL = f"COPY policy_events_batch ({_COLUMN_LIST}) FROM STDIN"
_FROM_STAGING = (f"INSERT INTO policy_events ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} "
                 f"FROM policy_events_batch ORDER BY ctid ON CONFLICT (event_id) DO NOTHING")


@cache
def _insert_sql(rows: int) -> str:
    return (f"INSERT INTO policy_events ({_COLUMN_LIST}) VALUES "
            + ", ".join([_ROW_MARKS] * rows) + " ON CONFLICT (event_id) DO NOTHING")


def _params(rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    return [row[column] for row in rows for column in EVENT_COLUMNS]


def _without_nul(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row with NUL characters replaced: PostgreSQL text (and jsonb, which indexes `extra`)
    cannot hold them, while SQLite and the JSON we write can (escaped as \\u0000)."""
    return {k: v.replace("\x00", "\ufffd").replace("\\u0000", "\\ufffd")
            if isinstance(v, str) else v for k, v in row.items()}


def _ordered(conn: Any, lock_timeout: float) -> None:
    """Begin the commit-ordered part of a write transaction (see the module docstring)."""
    # A replica that stalls while holding the lock must not stall the others for long: they
    # give up after `lock_timeout` and retry; a dead connection's transaction ends with it.
    conn.execute(f"SET LOCAL lock_timeout = {max(1, int(lock_timeout * 1000))}")
    conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = "
                 f"{max(1000, int(lock_timeout * 5000))}")
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVENT_ORDER_LOCK,))


class PgEventStore:
    """The writer's store when `[database] url` is set. Called on a worker thread, one batch
    at a time; every failure is an `EventStorageError`, which the writer retries."""

    def __init__(self, pg: Postgres, *, lock_timeout: float = 1.0) -> None:
        self.pg = pg
        self.lock_timeout = lock_timeout
        #: Events PostgreSQL refused even with NUL characters replaced (logged, never retried).
        self.rejected = 0

    def write(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Insert `events` in one transaction (a retried event_id is ignored: at most once)."""
        import psycopg  # here: a worker without PostgreSQL never loads it

        rows = [event_to_row(e) for e in events]
        try:
            try:
                self.pg.run_sync(self._insert_all, rows)
            except psycopg.DataError:
                # One hostile value must not hold the whole queue back: row by row instead.
                self.pg.run_sync(self._insert_each, rows)
        except DatabaseUnavailable as exc:
            raise EventStorageError(str(exc)) from exc
        except psycopg.Error as exc:
            raise EventStorageError(f"{type(exc).__name__}: {exc}") from exc

    def _insert_all(self, conn: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        # COPY into a session-local staging table, then one INSERT .. SELECT that skips event
        # ids already stored (a retried batch): COPY alone has no ON CONFLICT.
        with conn.transaction():
            conn.execute(_STAGING_TABLE)
            with conn.cursor().copy(_COPY_SQL) as copy:
                for row in rows:
                    copy.write_row([row[column] for column in EVENT_COLUMNS])
            _ordered(conn, self.lock_timeout)  # only now: the lock is held for the INSERT
            conn.execute(_FROM_STAGING)

    def _insert_each(self, conn: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        import psycopg

        with conn.transaction():
            _ordered(conn, self.lock_timeout)
            for row in rows:
                try:
                    with conn.transaction():  # a savepoint: one refused row is only itself
                        conn.execute(_insert_sql(1), _params([_without_nul(row)]))
                except psycopg.DataError as exc:
                    self.rejected += 1
                    log.error("policy event %s refused by PostgreSQL and dropped: %s",
                              row.get("event_id"), exc)

    def close(self) -> None:
        """The pool belongs to the process (GatewayState closes it)."""


def pg_query_history(conn: Any, query: HistoryQuery) -> tuple[list[dict[str, Any]], str | None]:
    """`query_history` on PostgreSQL: the same pages, cursors and filters. Rows are only ever
    visible in seq order (module docstring), so a cursor taken on one replica continues on any
    other without duplicates or gaps."""
    # Stored text never holds NUL (replaced on write, above): a filter holding one asks for
    # what was stored in its place, and PostgreSQL would refuse the parameter as it is.
    filters = {k: v.replace("\x00", "\ufffd") for k, v in query.filters.items()}
    where, args = history_where(dataclasses.replace(query, filters=filters), "%s",
                                _PG_EXPRESSIONS)
    sql = f"SELECT seq, {_COLUMN_LIST} FROM policy_events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC LIMIT %s"
    args.append(query.limit + 1)
    from psycopg.rows import dict_row

    cursor = conn.cursor(row_factory=dict_row)
    rows = cursor.execute(sql, args).fetchall()
    return history_page(rows, query.limit)


class _CommandEventStore(PgEventStore):
    """A command's own store: it opened the pool, so closing the store closes it."""

    def close(self) -> None:
        self.pg.close()


def command_event_store(config: Any) -> EventStorage:
    """Where a CLI command writes the events it records (`simulate`, `policies add`): the
    gateway's event store, the shared PostgreSQL when `[database] url` names one, so those
    events reach the history and the connectors of every replica."""
    if config.postgres is None:
        return EventStore(config.database_path)
    return _CommandEventStore(Postgres(config.postgres))
