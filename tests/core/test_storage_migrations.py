"""Versioned schema migrations of both backends, the `migrate` command, and `serve` refusing a
PostgreSQL schema that is missing or newer than it knows."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import Config
from gateway.db import SQLITE_MIGRATIONS, _initial_schema, open_database
from gateway.errors import ConfigError, SchemaMismatch
from gateway.storage.migrations import check_postgres, migrate_sqlite
from gateway.storage.pg_schema import MIGRATIONS
from gateway.storage.postgres import Postgres, migrate, require_schema
from gateway.storage.settings import PostgresSettings

LATEST = MIGRATIONS[-1][0]
ROOT = Path(__file__).resolve().parents[2]


def _pg(url: str) -> Postgres:
    return Postgres(PostgresSettings(url=url, pool_min_size=0, pool_max_size=2,
                                     connect_timeout=3))


def _tables(pg: Postgres) -> set[str]:
    rows = pg.run_sync(lambda c: c.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall())
    return {r[0] for r in rows}


def test_postgres_migrate_creates_every_table_once(empty_postgres_url: str) -> None:
    with _pg(empty_postgres_url) as pg:
        first = migrate(pg)
        assert first.applied == tuple(v for v, _, _ in MIGRATIONS)
        assert {"accounts", "api_keys", "projects", "project_grants", "policy_revisions",
                "policy_sources", "change_versions", "policy_events", "event_deliveries",
                "connector_leases", "schema_version"} <= _tables(pg)
        again = migrate(pg)
        assert again.applied == () and again.current == LATEST
        assert require_schema(pg) == LATEST


def test_postgres_schema_missing_or_newer_is_refused(empty_postgres_url: str) -> None:
    with _pg(empty_postgres_url) as pg:
        with pytest.raises(SchemaMismatch, match=r"no gateway schema.*migrate"):
            require_schema(pg)
        migrate(pg)
        pg.run_sync(lambda c: c.execute(
            "INSERT INTO schema_version(version, name) VALUES (%s, 'from the future')",
            (LATEST + 1,)))
        with pytest.raises(SchemaMismatch, match=f"version {LATEST + 1}, newer"):
            require_schema(pg)
        with pytest.raises(SchemaMismatch, match="newer than this gateway knows"):
            migrate(pg)


def test_postgres_older_schema_asks_for_migrate(postgres_url: str) -> None:
    newer = (*MIGRATIONS, (LATEST + 1, "next", ("CREATE TABLE next_thing (id INTEGER)",)))
    with _pg(postgres_url) as pg:
        with pytest.raises(SchemaMismatch, match="run `python -m gateway migrate`"):
            pg.run_sync(check_postgres, newer, "here")


def test_identity_changes_bump_the_version_and_events_do_not(postgres_url: str) -> None:
    def version(c):
        return c.execute("SELECT version FROM change_versions WHERE name = 'identity'"
                         ).fetchone()[0]

    with _pg(postgres_url) as pg:
        before = pg.run_sync(version)
        pg.run_sync(lambda c: c.execute(
            "INSERT INTO accounts(id, name, plan) VALUES ('a1', 'n', 'free')"))
        assert pg.run_sync(version) == before + 1
        pg.run_sync(lambda c: c.execute(
            "INSERT INTO policy_events(event_id, event_type, extra) "
            "VALUES ('e1', 't', '{\"request_id\": \"r\"}')"))
        assert pg.run_sync(version) == before + 1


def test_sqlite_new_file_records_its_schema_version(tmp_path: Path) -> None:
    db = open_database(tmp_path / "g.db")
    rows = db.conn.execute("SELECT version FROM schema_version").fetchall()
    assert rows == [(v,) for v, _, _ in SQLITE_MIGRATIONS]


def test_sqlite_file_of_an_earlier_release_adopts_migration_one(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    _initial_schema(conn)  # what releases before versioned migrations created
    conn.execute("INSERT INTO accounts(id, name, plan) VALUES ('a', 'kept', 'free')")
    conn.close()
    db = open_database(path)
    assert db.conn.execute("SELECT name FROM accounts").fetchall() == [("kept",)]
    assert db.conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 1


def test_sqlite_newer_schema_is_refused(tmp_path: Path) -> None:
    db = open_database(tmp_path / "g.db")
    db.conn.execute("INSERT INTO schema_version(version, name) VALUES (99, 'future')")
    db.conn.close()
    with pytest.raises(SchemaMismatch, match="version 99, newer"):
        open_database(tmp_path / "g.db")
    conn = sqlite3.connect(tmp_path / "g.db", isolation_level=None)
    with pytest.raises(SchemaMismatch):
        migrate_sqlite(conn, SQLITE_MIGRATIONS)


def _cli(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=config.parent)


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[database]\npath = "{tmp_path / "g.db"}"\nurl = "{url}"\n'
                    f'connect_timeout = 3\n')
    return path


def test_serve_refuses_a_missing_schema_and_migrate_creates_it(tmp_path: Path,
                                                               empty_postgres_url: str) -> None:
    config = _config(tmp_path, empty_postgres_url)
    refused = _cli("serve", "--port", "0", config=config)
    assert refused.returncode == 1
    assert "has no gateway schema" in refused.stderr and "migrate" in refused.stderr
    done = _cli("migrate", config=config)
    assert done.returncode == 0, done.stderr
    assert f"PostgreSQL: migrated to schema version {LATEST}" in done.stdout
    assert "SQLite: schema version 1 is current" in done.stdout or "SQLite: migrated" in \
        done.stdout
    again = _cli("migrate", config=config)
    assert f"PostgreSQL: schema version {LATEST} is current" in again.stdout


def test_serve_refuses_an_unreachable_database(tmp_path: Path) -> None:
    from redis_server import free_port

    config = _config(tmp_path, f"postgresql://gw@127.0.0.1:{free_port()}/gw")
    refused = _cli("serve", "--port", "0", config=config)
    assert refused.returncode == 1
    assert "did not answer" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize(("database", "message"), [
    ({"url": "mysql://h/db"}, "postgresql://user@host:5432/dbname"),
    ({"url": "postgresql://u:secret@h/db"}, "must not hold a password"),
    ({"url": "postgresql://u@h"}, "must name the database"),
    ({"url": "postgresql://u@h/db", "pool_min_size": 5, "pool_max_size": 2},
     "pool_min_size (5) must not exceed pool_max_size (2)"),
    ({"url": "postgresql://u@h/db", "password_env": "GW_TEST_UNSET_PG_PASSWORD"},
     "GW_TEST_UNSET_PG_PASSWORD, which is not set"),
    ({"url": "postgresql://u@h/db", "pool_max_size": 0}, "database.pool_max_size"),
])
def test_database_section_errors_say_what_is_wrong(database: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_mapping({"database": database}, env={})
    assert message in str(caught.value)


def test_password_comes_from_the_named_variable() -> None:
    config = Config.from_mapping({"database": {"url": "postgresql://u@h:5433/db",
                                               "password_env": "PGPW"}}, env={"PGPW": "s3"})
    assert config.postgres is not None
    assert config.postgres.password == "s3" and config.postgres.where == "h:5433/db"
    assert "password=s3" in config.postgres.conninfo
    assert Config.from_mapping({}, env={}).postgres is None
