"""The quota file's connections: how each is set up, and how a thread waits for the write lock.
The transactions themselves are `gateway.quota.sqlite.SqliteQuotaStore`'s."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import sqlite_utils

from gateway import db
from gateway.quota.files import take_over_counters


def begin_immediate(conn: sqlite3.Connection, timeout: float = 30.0) -> None:
    """Take the write lock, polling every 50-500 us. SQLite's own busy handler sleeps 1, 2, 5,
    10... ms between tries, which turns a lock held for 100 us by another worker process into a
    wait of several milliseconds; quota transactions are that short, so polling serves them
    in arrival order far sooner."""
    deadline = time.monotonic() + timeout
    pause = 0.00005
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.0005)


def connect(path: str, migrate_from: str | None = None) -> sqlite3.Connection:
    """A connection set up like `gateway.db.open_database`'s, usable from any of the limiter's
    threads (one at a time: a connection is taken from the pool for each transaction)."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    db.enable_wal(conn)
    conn.execute("PRAGMA synchronous = NORMAL")
    # Checkpoints (copying the WAL back, with an fsync) run in a thread (`SqliteQuotaStore._checkpoint`): a
    # quota commit may run on the event loop.
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    db.ensure_quota_schema(sqlite_utils.Database(conn))
    if migrate_from is not None and path != ":memory:":
        take_over_counters(conn, migrate_from)
    # From here only `begin_immediate` waits for the lock (statements inside a transaction
    # that holds it never do).
    conn.execute("PRAGMA busy_timeout = 0")
    return conn
