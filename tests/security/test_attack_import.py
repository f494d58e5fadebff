"""An attacker's pass over `python -m gateway import`: a hostile export file (a huge line,
values of the wrong type, SQL-looking text, duplicate ids, an unsafe policy file name, a NUL
PostgreSQL cannot store) is refused with a `CommandError`, and nothing of it is imported, into
PostgreSQL or into a SQLite file."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from gateway.db import open_database
from gateway.errors import CommandError
from gateway.identity.keys import IdentityStore
from gateway.identity.projects import ProjectStore
from gateway.storage import transfer
from gateway.storage.transfer import (
    POLICY_FILES,
    TABLES,
    export_sqlite,
    import_postgres,
    import_sqlite,
    read_export,
)

POLICY = 'policy v1 "moved" {\n  name "Moved"\n  default allow\n}\n'
Rows = dict[str, list[dict[str, Any]]]


@pytest.fixture
def exported(tmp_path: Path) -> bytes:
    """The export of a small SQLite deployment: an account, two keys, a project, a grant, a
    policy file."""
    db_path, policies = tmp_path / "old.db", tmp_path / "old-policies"
    policies.mkdir()
    (policies / "moved.pol").write_text(POLICY)
    db = open_database(db_path)
    identity = IdentityStore(db)
    account = identity.create_account("acme", "control")
    ProjectStore(db).create("proj_a", account_id=account.id, name="A", policy_id="moved")
    ProjectStore(db).grant("alice", "proj_a")
    identity.create_key(account.id, project_id="proj_a")
    identity.create_key(account.id)
    db.conn.close()
    out = io.BytesIO()
    export_sqlite(str(db_path), str(policies), out)
    return out.getvalue()


def lines_of(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines()]


def file_of(items: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in items)


def with_rows(data: bytes, change: Callable[[Rows], None]) -> bytes:
    """The export with its rows changed by `change`, its end line recounted."""
    items = lines_of(data)
    rows: Rows = {table: [] for table in (*TABLES, POLICY_FILES)}
    for item in items[1:-1]:
        rows[item["table"]].append(item["row"])
    change(rows)
    body = [{"table": table, "row": row} for table, found in rows.items() for row in found]
    return file_of([items[0], *body, {"end": {t: len(f) for t, f in rows.items()}}])


def into_sqlite(tmp_path: Path, data: bytes) -> tuple[Path, Path]:
    """Import `data` into a new SQLite deployment (expecting a refusal)."""
    target, policies = tmp_path / "new" / "g.db", tmp_path / "new" / "policies"
    target.parent.mkdir(exist_ok=True)
    db = open_database(target)
    try:
        with pytest.raises(CommandError):
            import_sqlite(db, str(policies), read_export(io.BytesIO(data))[0])
    finally:
        db.conn.close()
    return target, policies


def assert_sqlite_empty(target: Path, policies: Path) -> None:
    conn = sqlite3.connect(target)
    try:
        for table in TABLES:
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
    finally:
        conn.close()
    assert not policies.exists() or not any(policies.iterdir())


def assert_postgres_refuses(url: str, data: bytes) -> None:
    rows = read_export(io.BytesIO(data))[0]
    with psycopg.connect(url, autocommit=True) as conn:
        with pytest.raises(CommandError):
            import_postgres(conn, rows)
        for table in TABLES:
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
        assert conn.execute("SELECT COUNT(*) FROM policy_sources").fetchone()[0] == 0


# --- refused while reading the file ---------------------------------------------------------------


def test_a_line_longer_than_the_limit_is_refused_before_it_is_read_whole(
        exported: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "MAX_LINE_BYTES", 4096)
    items = lines_of(exported)
    huge = {"table": POLICY_FILES, "row": {"filename": "big.pol", "source": "x" * 10_000}}
    with pytest.raises(CommandError, match="longer than"):
        read_export(io.BytesIO(file_of([items[0], huge, *items[1:]])))


@pytest.mark.parametrize("end", [5, "accounts", ["accounts", 1], {"accounts": "1"},
                                 {"accounts": True}, None])
def test_an_end_line_that_is_no_counts_is_refused(exported: bytes, end: Any) -> None:
    items = lines_of(exported)
    with pytest.raises(CommandError):
        read_export(io.BytesIO(file_of([*items[:-1], {"end": end}])))


@pytest.mark.parametrize("value", [{"$ne": None}, ["a", "b"], True])
def test_a_row_value_that_no_column_holds_is_refused(exported: bytes, value: Any) -> None:
    def change(rows: Rows) -> None:
        rows["accounts"][0]["name"] = value

    with pytest.raises(CommandError, match="not text, a number"):
        read_export(io.BytesIO(with_rows(exported, change)))


@pytest.mark.parametrize("file", [
    {"filename": "../escape.pol", "source": POLICY},
    {"filename": "/etc/cron.d/x.pol", "source": POLICY},
    {"filename": ".hidden.pol", "source": POLICY},
    {"filename": "moved.pol", "source": 42},
    {"filename": "moved.pol"},
    {"filename": "other.pol", "source": POLICY, "mode": "0777"},
], ids=["parent", "absolute", "hidden", "number", "no-source", "extra-field"])
def test_a_hostile_policy_file_is_refused_before_anything_is_written(
        exported: bytes, tmp_path: Path, file: dict[str, Any]) -> None:
    def change(rows: Rows) -> None:
        rows[POLICY_FILES].append(file)

    with pytest.raises(CommandError, match="policy file"):
        read_export(io.BytesIO(with_rows(exported, change)))
    # Called directly (past the reader), the SQLite import refuses it before its transaction.
    items = lines_of(with_rows(exported, change))
    rows: Rows = {table: [] for table in (*TABLES, POLICY_FILES)}
    for item in items[1:-1]:
        rows[item["table"]].append(item["row"])
    db = open_database(tmp_path / "direct.db")
    try:
        with pytest.raises(CommandError):
            import_sqlite(db, str(tmp_path / "direct-policies"), rows)
        assert db.conn.execute("SELECT COUNT(*) FROM accounts").fetchone()[0] == 0
    finally:
        db.conn.close()
    assert not (tmp_path / "escape.pol").exists()


def test_a_policy_file_twice_is_refused(exported: bytes) -> None:
    def change(rows: Rows) -> None:
        rows[POLICY_FILES].append(dict(rows[POLICY_FILES][0]))

    with pytest.raises(CommandError, match="twice"):
        read_export(io.BytesIO(with_rows(exported, change)))


# --- refused by the import, nothing imported ------------------------------------------------------


def duplicate_key(rows: Rows) -> None:
    rows["api_keys"].append(dict(rows["api_keys"][0]))


def text_in_a_number_column(rows: Rows) -> None:
    rows["api_keys"][0]["revoked"] = "yes"


def number_in_a_text_column(rows: Rows) -> None:
    rows["accounts"][0]["name"] = 7


def grant_of_a_missing_project(rows: Rows) -> None:
    rows["project_grants"].append({**rows["project_grants"][0], "project_id": "proj_ghost"})


def null_where_required(rows: Rows) -> None:
    rows["accounts"][0]["plan"] = None


HOSTILE = [duplicate_key, text_in_a_number_column, number_in_a_text_column,
           null_where_required]


@pytest.mark.parametrize("change", HOSTILE, ids=lambda f: f.__name__)
def test_sqlite_refuses_hostile_rows_and_imports_nothing(
        exported: bytes, tmp_path: Path, change: Callable[[Rows], None]) -> None:
    assert_sqlite_empty(*into_sqlite(tmp_path, with_rows(exported, change)))


@pytest.mark.parametrize("change", [*HOSTILE, grant_of_a_missing_project],
                         ids=lambda f: f.__name__)
def test_postgres_refuses_hostile_rows_and_imports_nothing(
        exported: bytes, postgres_url: str, change: Callable[[Rows], None]) -> None:
    assert_postgres_refuses(postgres_url, with_rows(exported, change))


def test_postgres_refuses_a_nul_and_imports_nothing(exported: bytes, postgres_url: str) -> None:
    def change(rows: Rows) -> None:
        rows["projects"][0]["name"] = "A\x00B"

    assert_postgres_refuses(postgres_url, with_rows(exported, change))


def test_sql_looking_text_is_imported_as_text(exported: bytes, postgres_url: str,
                                             tmp_path: Path) -> None:
    hostile = "acme'); DROP TABLE accounts; --"

    def change(rows: Rows) -> None:
        rows["accounts"][0]["name"] = hostile

    rows = read_export(io.BytesIO(with_rows(exported, change)))[0]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        import_postgres(conn, rows)
        assert conn.execute("SELECT name FROM accounts").fetchall() == [(hostile,)]
    db = open_database(tmp_path / "sql.db")
    try:
        import_sqlite(db, str(tmp_path / "sql-policies"), rows)
        assert db.conn.execute("SELECT name FROM accounts").fetchall() == [(hostile,)]
    finally:
        db.conn.close()


def test_the_command_says_why_without_a_traceback(exported: bytes, tmp_path: Path) -> None:
    hostile = tmp_path / "hostile.jsonl"
    hostile.write_bytes(with_rows(exported, duplicate_key))
    config = tmp_path / "gateway.toml"
    config.write_text(f'[database]\npath = "{tmp_path / "cli" / "g.db"}"\n'
                      f'[policies]\ndirectory = "{tmp_path / "cli" / "policies"}"\n')
    done = subprocess.run([sys.executable, "-m", "gateway", "import", str(hostile),
                           "--config", str(config)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "nothing was imported" in done.stderr
    assert_sqlite_empty(tmp_path / "cli" / "g.db", tmp_path / "cli" / "policies")
