"""`migrate`: create or upgrade the database schemas (SQLite file, and PostgreSQL when
`[database] url` is set). `serve` never creates a PostgreSQL schema by itself."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.config import Config


def add_storage_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    migrate = commands.add_parser(
        "migrate", parents=[common],
        help="create or upgrade the database schema (SQLite, and PostgreSQL if configured)")
    migrate.set_defaults(func=_migrate)


def _migrate(args: argparse.Namespace) -> int:
    import sqlite3

    from gateway.db import SQLITE_MIGRATIONS, enable_wal
    from gateway.storage.migrations import migrate_sqlite

    config = Config.load(args.config)
    if config.database_path != ":memory:":
        from pathlib import Path

        Path(config.database_path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(config.database_path, timeout=30.0, isolation_level=None)
    try:
        enable_wal(conn)
        print(migrate_sqlite(conn, SQLITE_MIGRATIONS, where=config.database_path).describe())
    finally:
        conn.close()
    if config.postgres is not None:
        from gateway.storage.postgres import Postgres, migrate

        with Postgres(config.postgres) as pg:
            print(migrate(pg).describe())
    return 0
