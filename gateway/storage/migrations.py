"""Versioned schema migrations for both backends, recorded in a `schema_version` table.

Each backend has its numbered set: SQLite's (`gateway.db.SQLITE_MIGRATIONS`; its first is the
schema every earlier release created, written idempotently so existing files adopt it) and
PostgreSQL's (`gateway.storage.pg_schema.MIGRATIONS`). A migration runs in one transaction with
its `schema_version` row, under a lock, so several processes migrating at once apply each one
exactly once. A schema newer than this code knows is refused: an older gateway must not write
to tables it does not understand.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import SchemaMismatch

#: An arbitrary, fixed key for `pg_advisory_xact_lock`: one migrating process at a time.
_PG_MIGRATION_LOCK = 7_315_402_118


@dataclass(frozen=True, slots=True)
class SchemaState:
    backend: str
    current: int
    latest: int
    applied: tuple[int, ...] = ()

    def describe(self) -> str:
        if self.applied:
            done = ", ".join(str(v) for v in self.applied)
            return f"{self.backend}: migrated to schema version {self.current} (applied {done})"
        return f"{self.backend}: schema version {self.current} is current"


def _too_new(backend: str, where: str, current: int, latest: int) -> SchemaMismatch:
    return SchemaMismatch(
        f"the {backend} schema at {where} is at version {current}, newer than this gateway "
        f"knows ({latest}): run the gateway version that migrated it")


# SQLite ------------------------------------------------------------------------------------

SqliteMigration = tuple[int, str, Callable[[sqlite3.Connection], None]]


def migrate_sqlite(conn: sqlite3.Connection, migrations: Sequence[SqliteMigration],
                   where: str = "the SQLite file") -> SchemaState:
    """Apply the pending migrations (a no-op when current). `conn` is in autocommit mode."""
    latest = migrations[-1][0]
    applied = []
    with conn:  # commits at the end, rolls back on an exception
        conn.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then see it
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                     "name TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT "
                     "(strftime('%Y-%m-%dT%H:%M:%SZ', 'now')))")
        current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version"
                               ).fetchone()[0]
        if current > latest:
            raise _too_new("SQLite", where, current, latest)
        for version, name, apply in migrations:
            if version > current:
                apply(conn)
                conn.execute("INSERT INTO schema_version(version, name) VALUES (?, ?)",
                             (version, name))
                applied.append(version)
    return SchemaState("SQLite", max(current, latest), latest, tuple(applied))


# PostgreSQL --------------------------------------------------------------------------------

PgMigration = tuple[int, str, tuple[str, ...]]


def _pg_current(conn: Any) -> int:
    exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]
    if not exists:
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version"
                            ).fetchone()[0])


def migrate_postgres(conn: Any, migrations: Sequence[PgMigration], where: str) -> SchemaState:
    """Apply the pending migrations on `conn` (a psycopg connection in autocommit mode). DDL is
    transactional in PostgreSQL: all of them commit with their `schema_version` rows, or none."""
    latest = migrations[-1][0]
    applied = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                     "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        current = _pg_current(conn)
        if current > latest:
            raise _too_new("PostgreSQL", where, current, latest)
        for version, name, statements in migrations:
            if version <= current:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version(version, name) VALUES (%s, %s)",
                         (version, name))
            applied.append(version)
    return SchemaState("PostgreSQL", max(current, latest), latest, tuple(applied))


def check_postgres(conn: Any, migrations: Sequence[PgMigration], where: str) -> int:
    """The schema version, when it is exactly the one this code knows; SchemaMismatch otherwise
    (`serve` calls this: it never creates or migrates the schema itself)."""
    latest = migrations[-1][0]
    current = _pg_current(conn)
    if current == 0:
        raise SchemaMismatch(f"the PostgreSQL database {where} has no gateway schema: run "
                             "`python -m gateway migrate` first")
    if current > latest:
        raise _too_new("PostgreSQL", where, current, latest)
    if current < latest:
        raise SchemaMismatch(f"the PostgreSQL schema at {where} is at version {current}; this "
                             f"gateway needs {latest}: run `python -m gateway migrate`")
    return current
