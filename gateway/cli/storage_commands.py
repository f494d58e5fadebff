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


def shared_database(config: Config) -> Any:
    """Where accounts, keys, projects, grants and policy revisions are for a CLI command: the
    SQLite file, or PostgreSQL (`[database] url`), whose pool is closed when the command exits."""
    if config.postgres is None:
        from gateway.db import open_database

        return open_database(config.database_path)
    import atexit

    from gateway.storage.postgres import Postgres
    from gateway.storage.sql import PostgresSql

    pg = Postgres(config.postgres)
    pg.open()
    atexit.register(pg.close)
    return PostgresSql(pg)


def pull_policies(config: Config, db: Any) -> None:
    """With PostgreSQL, bring this machine's mirror of the policies up to date first (and
    import the configured directory, as the gateway does when it changes)."""
    if config.postgres is None:
        return
    from gateway.storage.policies import import_directory, pull

    if config.policies_import_dir is not None:
        db.pg.run_sync(import_directory, config.policies_import_dir)
    db.pg.run_sync(pull, config.policies_dir)


def publish_policies(config: Config, db: Any, names: list[str]) -> None:
    """With PostgreSQL, put the mirror files a command changed into the database."""
    if config.postgres is None:
        return
    from gateway.storage.policies import publish

    db.pg.run_sync(publish, config.policies_dir, names, "cli")
