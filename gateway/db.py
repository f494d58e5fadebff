"""The embedded SQLite database: opening it the same way everywhere, and its schema.

Every process (each hypercorn worker, the CLI) opens its own connections. WAL mode lets readers
run beside the one writer, and `busy_timeout` makes a writer wait for the lock instead of failing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

SCHEMA_VERSION = 1


def open_database(path: str | Path) -> sqlite_utils.Database:
    """Open (creating if needed) the database at `path`, with the schema in place."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 30000")
    _enable_wal(conn)
    # NORMAL is durable across application crashes in WAL mode; only a power loss may lose the
    # last transactions, which is the usual trade-off for a gateway's audit trail.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    db = sqlite_utils.Database(conn)
    ensure_schema(db)
    return db


def _enable_wal(conn: sqlite3.Connection, timeout: float = 30.0) -> None:
    """Switch to WAL. The switch needs an exclusive lock and SQLite answers "database is
    locked" at once, without its busy handler, while another process opens the same new file
    (several workers starting together): retry for a bounded time."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def ensure_schema(db: sqlite_utils.Database) -> None:
    """Create the tables and indexes that are missing. Safe to run from several processes."""
    with db.conn:
        db.conn.execute("BEGIN IMMEDIATE")  # one process creates; the others wait, then see it
        db.table("accounts").create(
            {"id": str, "name": str, "plan": str, "created_at": str},
            pk="id", not_null={"name", "plan"}, if_not_exists=True,
        )
        db.table("api_keys").create(
            {
                "id": str, "account_id": str, "project_id": str, "label": str,
                "key_hash": str, "key_preview": str, "revoked": int,
                "created_at": str, "revoked_at": str,
            },
            pk="id", not_null={"account_id", "key_hash", "key_preview", "revoked"},
            foreign_keys=[("account_id", "accounts", "id")], if_not_exists=True,
        )
        db.table("api_keys").create_index(["key_hash"], unique=True, if_not_exists=True)
        db.table("projects").create(
            {
                "id": str, "account_id": str, "name": str, "status": str, "policy_id": str,
                "budget": str, "user_quota": str, "allow_inline_policy": int,
                "created_at": str, "updated_at": str,
            },
            pk="id", not_null={"account_id", "name", "status", "budget", "user_quota",
                               "allow_inline_policy"},
            foreign_keys=[("account_id", "accounts", "id")], if_not_exists=True,
        )
        db.table("projects").create_index(["account_id"], if_not_exists=True)
        db.table("project_grants").create(
            {"user_id": str, "project_id": str, "created_at": str},
            pk=("user_id", "project_id"), not_null={"user_id", "project_id"},
            foreign_keys=[("project_id", "projects", "id")], if_not_exists=True,
        )
        # One row per saved state of a policy file; (policy_id, revision) is unique, so two
        # processes can never both claim the same revision number.
        db.table("policy_revisions").create(
            {
                "policy_id": str, "revision": int, "edit_type": str, "sha256": str,
                "source": str, "name": str, "classification": str, "path": str,
                "created_at": str,
            },
            pk=("policy_id", "revision"),
            not_null={"policy_id", "revision", "edit_type", "sha256", "source"},
            if_not_exists=True,
        )
        db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
        db.conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )


@contextmanager
def write_transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """A `BEGIN IMMEDIATE` transaction: takes the write lock first, so a read-then-write inside it
    (check a row, then insert) cannot interleave with another process doing the same."""
    with db.conn:
        db.conn.execute("BEGIN IMMEDIATE")
        yield db


def data_version(db: sqlite_utils.Database) -> int:
    """SQLite's counter of commits made by *other* connections since this one opened.

    In WAL mode it is read from the shared-memory index, so checking it costs no disk I/O; that
    is what lets the request path notice a key revoked by another process on the next request.
    """
    row = db.conn.execute("PRAGMA data_version").fetchone()
    return int(row[0])
