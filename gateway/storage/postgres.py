"""PostgreSQL from trio: psycopg 3's sync API on worker threads, through one bounded pool.

psycopg's async API runs only on asyncio, so every statement runs in `trio.to_thread.run_sync`
with a `CapacityLimiter` as wide as the pool: a burst of callers queues on the limiter (a trio
wait, cancellable) instead of parking threads inside the pool. The request path never comes
here; only management writes, the change poller and start-up do (docs/scale-out.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from gateway.errors import DatabaseUnavailable
from gateway.storage.settings import PostgresSettings

log = logging.getLogger("gateway")
# The pool logs a warning for every failed reconnection attempt while PostgreSQL is down; the
# change poller already says it once when the outage starts and once when it ends.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
T = TypeVar("T")

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool


def connection_errors() -> tuple[type[BaseException], ...]:
    """What a dead or unreachable server raises; anything else is a bug or a constraint we
    report. psycopg is imported here, not at module level: a worker that never talks to
    PostgreSQL does not carry it (about 7 MB of resident memory)."""
    import psycopg
    from psycopg_pool import PoolTimeout

    return (psycopg.OperationalError, PoolTimeout)


class Postgres:
    """One pool per process (each hypercorn worker, the CLI). `run_sync` is for threads and the
    CLI; `run` is for trio code."""

    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings
        # autocommit: one statement is one transaction; `transaction()` opens longer ones.
        # check: a connection that died while idle in the pool (server restarted) is replaced
        # before use, so the first call after an outage does not fail for nothing.
        from psycopg_pool import ConnectionPool

        self.pool: ConnectionPool = ConnectionPool(
            settings.conninfo, min_size=settings.pool_min_size,
            max_size=settings.pool_max_size, open=False, timeout=settings.connect_timeout,
            kwargs={"autocommit": True}, check=ConnectionPool.check_connection,
            name="gateway")
        self.limiter = trio.CapacityLimiter(settings.pool_max_size)
        self._opened = False

    def open(self) -> None:
        """Start the pool; connections are made in its background threads, so a server that is
        down now does not stop this (the first call reports it instead)."""
        if not self._opened:
            self.pool.open(wait=False)
            self._opened = True

    def close(self) -> None:
        if self._opened:
            self.pool.close(timeout=2.0)
            self._opened = False

    def __enter__(self) -> Postgres:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_sync(self, work: Callable[..., T], *args: Any, wait: float | None = None) -> T:
        """`work(connection, *args)` on a pooled connection; DatabaseUnavailable when none is
        to be had within `wait` seconds (default `connect_timeout`)."""
        self.open()
        try:
            with self.pool.connection(timeout=wait) as conn:
                return work(conn, *args)
        except connection_errors() as exc:
            raise DatabaseUnavailable(f"PostgreSQL at {self.settings.where} did not answer: "
                                      f"{_first_line(exc)}") from exc

    async def run(self, work: Callable[..., T], *args: Any, wait: float | None = None) -> T:
        """`run_sync` on a worker thread. Cancellation waits for the statement in flight (a
        thread cannot be interrupted); `connect_timeout` bounds how long that can be."""
        return await trio.to_thread.run_sync(partial(self.run_sync, work, *args, wait=wait),
                                             limiter=self.limiter)

    async def ping(self) -> str:
        """A readiness probe: "ok" or "unavailable: why"."""
        try:
            await self.run(lambda conn: conn.execute("SELECT 1").fetchone())
        except DatabaseUnavailable as exc:
            return f"unavailable: {exc}"
        return "ok"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def migrate(pg: Postgres) -> Any:
    """Apply PostgreSQL's pending migrations (`python -m gateway migrate`); the SchemaState."""
    from gateway.storage.migrations import migrate_postgres
    from gateway.storage.pg_schema import MIGRATIONS

    return pg.run_sync(migrate_postgres, MIGRATIONS, pg.settings.where)


def require_schema(pg: Postgres) -> int:
    """The schema version, when it is the one this code knows; SchemaMismatch (missing, older,
    newer) or DatabaseUnavailable otherwise. `serve` calls this and never migrates."""
    from gateway.storage.migrations import check_postgres
    from gateway.storage.pg_schema import MIGRATIONS

    return pg.run_sync(check_postgres, MIGRATIONS, pg.settings.where)
