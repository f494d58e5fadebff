"""One small SQL seam over both backends, for the stores of identity and policy revisions.

The stores write their SQL once, with `?` placeholders and portable statements; `SqliteSql`
runs it on a `sqlite_utils.Database` as before, `PostgresSql` on the PostgreSQL pool with `%s`.
A `transaction()` is a write transaction that serialises writers the way SQLite's
`BEGIN IMMEDIATE` does (PostgreSQL: an advisory lock), so a store's check-then-write cannot
interleave with another replica's.

`PostgresSql` blocks its thread for a round trip: trio code calls the stores through
`GatewayState.store_call`, which runs them on a worker thread when the backend is PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import sqlite_utils

from gateway.db import write_transaction
from gateway.storage.postgres import Postgres

#: Key of the advisory lock every PostgreSQL write transaction of the stores takes.
_WRITE_LOCK = 7_315_402_121
#: Longest wait for a lock inside a write transaction.
LOCK_WAIT_MS = 10_000


class Rows(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Sql(Protocol):
    backend: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def insert(self, table: str, row: Mapping[str, Any]) -> None: ...

    def transaction(self) -> Any: ...


class SqliteSql:
    backend = "sqlite"

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        cursor: Rows = self.db.conn.execute(sql, list(params))
        return cursor

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return list(self.db.query(sql, list(params)))

    def insert(self, table: str, row: Mapping[str, Any]) -> None:
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self.db.conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})",
                             list(row.values()))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self.db.conn.in_transaction:  # nested: the outer one holds the lock
            yield
            return
        with write_transaction(self.db):
            yield


class _Fetched:
    """A PostgreSQL result read whole, so the connection goes back to the pool at once."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return list(self._rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


def to_pg(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (the stores' SQL holds no literal `?` or `%`), and
    SQLite's `INSERT OR IGNORE` as PostgreSQL's `ON CONFLICT DO NOTHING`."""
    sql = sql.replace("%", "%%").replace("?", "%s")
    if sql.lstrip().upper().startswith("INSERT OR IGNORE"):
        sql = sql.replace("INSERT OR IGNORE", "INSERT", 1) + " ON CONFLICT DO NOTHING"
    return sql


def _execute_on(conn: Any, sql: str, params: Sequence[Any], as_dicts: bool) -> _Fetched:
    cursor = conn.execute(to_pg(sql), list(params))
    if cursor.description is None:
        return _Fetched([], cursor.rowcount)
    rows = cursor.fetchall()
    if as_dicts:
        names = [column.name for column in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in rows]
    return _Fetched(rows, cursor.rowcount)


class PostgresSql:
    backend = "postgres"

    def __init__(self, pg: Postgres) -> None:
        self.pg = pg
        # The connection of the transaction open on this thread, if any.
        self._local = threading.local()

    def _run(self, sql: str, params: Sequence[Any], as_dicts: bool = False) -> _Fetched:
        held = getattr(self._local, "conn", None)
        if held is not None:
            return _execute_on(held, sql, params, as_dicts)
        return self.pg.run_sync(_execute_on, sql, params, as_dicts)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        return self._run(sql, params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self._run(sql, params, as_dicts=True).fetchall()

    def insert(self, table: str, row: Mapping[str, Any]) -> None:
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._run(f"INSERT INTO {table} ({columns}) VALUES ({marks})", list(row.values()))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        from gateway.errors import DatabaseUnavailable
        from gateway.storage.postgres import connection_errors

        self.pg.open()
        try:
            with self.pg.pool.connection() as conn, conn.transaction():
                # A writer stuck elsewhere holding the lock must not hang this worker's threads
                # for good: past the wait, the call fails as "did not answer" (503).
                conn.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
                self._local.conn = conn
                try:
                    yield
                finally:
                    self._local.conn = None
        except connection_errors() as exc:
            raise DatabaseUnavailable(f"PostgreSQL at {self.pg.settings.where} did not answer: "
                                      f"{str(exc).strip().splitlines()[0]}") from exc


class ConnectionSql:
    """The seam on one psycopg connection a caller already holds (inside its transaction)."""

    backend = "postgres"

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        return _execute_on(self.conn, sql, params, False)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return _execute_on(self.conn, sql, params, True).fetchall()

    def insert(self, table: str, row: Mapping[str, Any]) -> None:
        marks = ", ".join("?" for _ in row)
        _execute_on(self.conn, f"INSERT INTO {table} ({', '.join(row)}) VALUES ({marks})",
                    list(row.values()), False)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.conn.transaction():
            yield


def as_sql(db: Any) -> Sql:
    """The seam for `db`: a `sqlite_utils.Database` (what the CLI and tests open) or a `Sql`."""
    if isinstance(db, sqlite_utils.Database):
        return SqliteSql(db)
    return db  # type: ignore[no-any-return]
