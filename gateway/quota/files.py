"""Where the SQLite quota store keeps its counters: a file of its own beside the gateway's
database, so that admission never waits for the event writer's batches on the database's lock;
and taking over the counters that earlier versions kept in the database."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


def quota_database_path(config: Any) -> str:
    """The quota store's SQLite file: beside the gateway's database, named after it
    (`data/gateway.db` -> `data/gateway-quotas.db`). The one place this path is chosen."""
    path = str(config.database_path)
    if path == ":memory:":
        return path
    database = Path(path)
    return str(database.with_name(f"{database.stem}-quotas{database.suffix}"))


def take_over_counters(conn: sqlite3.Connection, database: str) -> None:
    """Copy the counters and open reservations an earlier version kept in `database`, once per
    quota file (several workers may open it together: the first one copies)."""
    if database == ":memory:" or not Path(database).exists():
        return
    conn.execute("ATTACH DATABASE ? AS earlier", (database,))  # not allowed in a transaction
    try:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE IF NOT EXISTS quota_meta (key TEXT PRIMARY KEY, "
                         "value TEXT NOT NULL)")
            if conn.execute("SELECT 1 FROM quota_meta WHERE key = 'taken_over'").fetchone():
                return
            tables = {row[0] for row in conn.execute(
                "SELECT name FROM earlier.sqlite_master WHERE type = 'table'")}
            for table in ("quota_counters", "quota_reservations"):
                if table in tables:
                    conn.execute(f"INSERT OR IGNORE INTO main.{table} "
                                 f"SELECT * FROM earlier.{table}")
            conn.execute("INSERT INTO quota_meta (key, value) VALUES ('taken_over', ?)",
                         (database,))
    finally:
        conn.execute("DETACH DATABASE earlier")
