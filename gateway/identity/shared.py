"""The identity snapshot of a replica whose accounts, keys, projects and grants live in
PostgreSQL (docs/scale-out.md).

The request path reads only the snapshot in memory, never the database: `refresh_if_changed`
does nothing here. `refresh()` reads a new snapshot on a worker thread, in one REPEATABLE READ
transaction with the identity counter, and swaps it in with one assignment; the
`gateway.storage.changes.ChangePoller` calls it when the counter moved, so a key created or
revoked on any replica applies here within a poll interval.
"""

from __future__ import annotations

from typing import Any

from gateway.identity.keys import IdentityCache, IdentitySnapshot, load_snapshot
from gateway.storage.postgres import Postgres
from gateway.storage.sql import ConnectionSql


def read_snapshot(conn: Any) -> tuple[int, IdentitySnapshot]:
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        version = conn.execute(
            "SELECT version FROM change_versions WHERE name = 'identity'").fetchone()[0]
        return int(version), load_snapshot(ConnectionSql(conn))


class SharedIdentityCache(IdentityCache):
    def __init__(self, pg: Postgres) -> None:
        super().__init__(None)
        self.pg = pg
        #: The identity counter the snapshot in force was read at.
        self.version: int | None = None

    def refresh_if_changed(self) -> None:
        """Nothing: the request path never reads PostgreSQL (see the module docstring)."""

    def invalidate(self) -> None:
        """Nothing to do synchronously: writers await `refresh()` (read-your-writes)."""

    async def refresh(self) -> None:
        version, snapshot = await self.pg.run(read_snapshot)
        if self.version is None or version >= self.version:
            self._snapshot = snapshot
            self.version = version
