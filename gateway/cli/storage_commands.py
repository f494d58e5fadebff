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


def add_transfer_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    export = commands.add_parser(
        "export", parents=[common],
        help="write this SQLite deployment (identity, policies, revisions, events) to a "
             "JSON-lines file")
    export.add_argument("file", metavar="FILE", help="the file to write ('-' for stdout)")
    export.set_defaults(func=_export)
    imported = commands.add_parser(
        "import", parents=[common],
        help="load an export into the configured store (PostgreSQL when [database] url is "
             "set), which must be empty")
    imported.add_argument("file", metavar="FILE", help="a file written by `export`")
    imported.set_defaults(func=_import)


def _export(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from gateway.errors import CommandError
    from gateway.storage.transfer import export_sqlite

    config = Config.load(args.config)
    if config.database_path == ":memory:" or not Path(config.database_path).is_file():
        raise CommandError(f"no SQLite database at {config.database_path}")
    # The policies of a SQLite deployment are its directory (a PostgreSQL one's mirror would
    # be a copy of the database: exported only as revisions there).
    policies = config.policies_dir if config.postgres is None else None
    if args.file == "-":
        counts = export_sqlite(config.database_path, policies, sys.stdout.buffer)
    else:
        with open(args.file, "wb") as out:
            counts = export_sqlite(config.database_path, policies, out)
    print(_counts_line("exported", counts), file=sys.stderr)
    return 0


def _import(args: argparse.Namespace) -> int:
    from gateway.storage.transfer import import_postgres, import_sqlite, read_export

    config = Config.load(args.config)
    with open(args.file, "rb") as lines:
        rows, _ = read_export(lines)
    if config.postgres is not None:
        from gateway.storage.postgres import Postgres, require_schema

        with Postgres(config.postgres) as pg:
            require_schema(pg)
            counts = pg.run_sync(import_postgres, rows)
    else:
        from gateway.datadir import prepare_policies_dir
        from gateway.db import open_database

        db = open_database(config.database_path)
        prepare_policies_dir(config)
        counts = import_sqlite(db, config.policies_dir, rows)
    print(_counts_line("imported", counts))
    return 0


def _counts_line(done: str, counts: dict[str, int]) -> str:
    return f"{done}: " + ", ".join(f"{table} {count}" for table, count in counts.items())
