"""`export` from a SQLite deployment and `import` into PostgreSQL or another SQLite file:
every row of every table arrives, events keep their `seq` (history reads the same), and a
truncated or foreign file, or a store holding data already, is refused."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_event_store import enforcement

from gateway.admin.registry import PolicyRegistry
from gateway.db import now_iso, open_database
from gateway.errors import CommandError
from gateway.events.store import EventStore, row_to_event
from gateway.identity.keys import IdentityStore
from gateway.identity.projects import ProjectStore
from gateway.storage.transfer import (
    POLICY_FILES,
    TABLES,
    export_sqlite,
    import_postgres,
    read_export,
)

POLICY = 'policy v1 "moved" {\n  name "Moved"\n  default allow\n}\n'


def _deployment(root: Path) -> tuple[Path, Path]:
    """A SQLite deployment with a row in every table that moves."""
    db_path, policies = root / "old.db", root / "policies"
    policies.mkdir(parents=True)
    (policies / "moved.pol").write_text(POLICY)
    db = open_database(db_path)
    identity = IdentityStore(db)
    account = identity.create_account("acme", "control")
    projects = ProjectStore(db)
    projects.create("proj_a", account_id=account.id, name="A", policy_id="moved",
                    budget={"requests": {"daily": 5}})
    projects.grant("alice", "proj_a")
    identity.create_key(account.id, project_id="proj_a", label="bound")
    unbound, _ = identity.create_key(account.id)
    identity.revoke_key(unbound.id)
    PolicyRegistry.load(policies, db)
    store = EventStore(db_path)
    store.write([enforcement(reason=f"n{n}") for n in range(25)])
    store.close()
    db.conn.execute("DELETE FROM policy_events WHERE seq IN (3, 4)")  # a gap, as retention makes
    db.conn.execute("INSERT INTO event_deliveries VALUES ('audit', 20, 18, 1, 'timeout', ?)",
                    [now_iso()])
    db.conn.close()
    return db_path, policies


def _sqlite_rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
    finally:
        conn.close()


def _export(tmp_path: Path) -> tuple[Path, bytes]:
    db_path, policies = _deployment(tmp_path / "old")
    out = io.BytesIO()
    counts = export_sqlite(str(db_path), str(policies), out)
    assert counts == {"accounts": 1, "api_keys": 2, "projects": 1, "project_grants": 1,
                      "policy_revisions": 1, "policy_events": 23, "event_deliveries": 1,
                      POLICY_FILES: 1}
    return db_path, out.getvalue()


def test_export_then_import_into_postgres_moves_every_row(tmp_path: Path,
                                                          postgres_url: str) -> None:
    db_path, data = _export(tmp_path)
    rows, _ = read_export(io.BytesIO(data))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        import_postgres(conn, rows)
        for table in TABLES:
            moved = sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
            assert moved == _sqlite_rows(db_path, table), table
        sources = conn.execute("SELECT filename, source FROM policy_sources").fetchall()
        assert sources == [("moved.pol", POLICY)]
        # History reads the same, newest first, by seq; new events continue after the last.
        cursor = conn.cursor(row_factory=psycopg.rows.dict_row)
        pg_history = [row_to_event(r) for r in cursor.execute(
            "SELECT * FROM policy_events ORDER BY seq DESC").fetchall()]
        conn.execute("INSERT INTO policy_events(event_id, event_type) VALUES ('next', 'x')")
        assert conn.execute("SELECT seq FROM policy_events WHERE event_id = 'next'"
                            ).fetchone()[0] == 26
    sqlite_db = open_database(db_path)
    sqlite_history = [row_to_event(r) for r in sqlite_db.query(
        "SELECT * FROM policy_events ORDER BY seq DESC")]
    assert pg_history == sqlite_history and len(pg_history) == 23


def test_import_refuses_a_store_that_holds_data(tmp_path: Path, postgres_url: str) -> None:
    _, data = _export(tmp_path)
    rows, _ = read_export(io.BytesIO(data))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        import_postgres(conn, rows)
        with pytest.raises(CommandError, match="already holds data"):
            import_postgres(conn, rows)
        assert conn.execute("SELECT COUNT(*) FROM accounts").fetchone()[0] == 1


@pytest.mark.parametrize("damage", ["truncated", "no header", "garbage line", "extra row"])
def test_a_damaged_export_is_refused(tmp_path: Path, damage: str) -> None:
    _, data = _export(tmp_path)
    lines = data.splitlines(keepends=True)
    damaged = {"truncated": b"".join(lines[:-3]),
               "no header": b"".join(lines[1:]),
               "garbage line": b"".join([*lines[:5], b"{not json\n", *lines[5:]]),
               "extra row": b"".join([*lines[:-1], lines[1], lines[-1]])}[damage]
    with pytest.raises(CommandError):
        read_export(io.BytesIO(damaged))


def _cli(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=120)


def test_the_commands_move_a_deployment_to_postgres_and_to_sqlite(
        tmp_path: Path, postgres_url: str) -> None:
    db_path, policies = _deployment(tmp_path / "old")
    old = tmp_path / "old.toml"
    old.write_text(f'[database]\npath = "{db_path}"\n[policies]\ndirectory = "{policies}"\n')
    exported = _cli("export", str(tmp_path / "moved.jsonl"), config=old)
    assert exported.returncode == 0, exported.stderr
    assert "policy_events 23" in exported.stderr

    to_pg = tmp_path / "pg.toml"
    to_pg.write_text(f'[database]\npath = "{tmp_path / "new" / "g.db"}"\n'
                     f'url = "{postgres_url}"\n')
    imported = _cli("import", str(tmp_path / "moved.jsonl"), config=to_pg)
    assert imported.returncode == 0, imported.stderr
    assert "accounts 1, api_keys 2" in imported.stdout and "policy_files 1" in imported.stdout
    keys = _cli("keys", "list", "--json", config=to_pg)
    assert keys.returncode == 0 and keys.stdout.count('"key_preview"') == 2
    listed = _cli("policies", "list", "-q", config=to_pg)
    assert listed.returncode == 0 and "moved" in listed.stdout

    to_sqlite = tmp_path / "sqlite.toml"
    target = tmp_path / "copy" / "g.db"
    to_sqlite.write_text(f'[database]\npath = "{target}"\n'
                         f'[policies]\ndirectory = "{tmp_path / "copy" / "policies"}"\n')
    copied = _cli("import", str(tmp_path / "moved.jsonl"), config=to_sqlite)
    assert copied.returncode == 0, copied.stderr
    for table in TABLES:
        assert _sqlite_rows(target, table) == _sqlite_rows(db_path, table), table
    assert (tmp_path / "copy" / "policies" / "moved.pol").read_text() == POLICY


@pytest.mark.parametrize("column", ["id) VALUES ('x'); DROP TABLE accounts; --", "not_a_column"])
def test_a_row_with_a_foreign_column_is_refused_before_any_sql(
        tmp_path: Path, postgres_url: str, column: str) -> None:
    _, data = _export(tmp_path)
    rows, _ = read_export(io.BytesIO(data))
    rows["accounts"][0][column] = "x"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        with pytest.raises(CommandError, match="columns"):
            import_postgres(conn, rows)
        assert conn.execute("SELECT COUNT(*) FROM accounts").fetchone()[0] == 0
