"""The `backend` fixture's two stores: each test of identity, projects and policy revisions
runs once on a SQLite file and once on a fresh PostgreSQL database (tests/conftest.py).

`open()` is a new connection to the same store (another process, as far as the store can
tell); `cache()` an identity snapshot reader. The PostgreSQL one refreshes when asked on the
calling thread: the gateway's refreshes run off the request path (tests/scale_e2e test that),
but what they read is the same `read_snapshot`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.db import open_database
from gateway.identity.keys import IdentityCache
from gateway.identity.shared import SharedIdentityCache, read_snapshot
from gateway.storage.postgres import Postgres
from gateway.storage.settings import PostgresSettings
from gateway.storage.sql import PostgresSql


class SqliteBackend:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self) -> Any:
        return open_database(self.path)

    def cache(self) -> IdentityCache:
        return IdentityCache(self.open())

    def close(self) -> None:
        """Nothing: each connection is closed with its object."""


class PolledIdentityCache(SharedIdentityCache):
    """Reads the snapshot synchronously whenever the identity counter moved."""

    def refresh_if_changed(self) -> None:
        version = self.pg.run_sync(lambda conn: conn.execute(
            "SELECT version FROM change_versions WHERE name = 'identity'").fetchone()[0])
        if version != self.version:
            self.version, self._snapshot = self.pg.run_sync(read_snapshot)


class PostgresBackend:
    name = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url
        self.pools: list[Postgres] = []

    def pool(self) -> Postgres:
        pg = Postgres(PostgresSettings(url=self.url, pool_min_size=0, pool_max_size=4,
                                       connect_timeout=5))
        self.pools.append(pg)
        return pg.__enter__()

    def open(self) -> PostgresSql:
        return PostgresSql(self.pool())

    def cache(self) -> IdentityCache:
        return PolledIdentityCache(self.pool())

    def close(self) -> None:
        for pg in self.pools:
            pg.close()
