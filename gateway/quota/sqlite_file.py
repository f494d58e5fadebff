"""The quota file itself: how each connection is set up, how a thread waits for the write
lock, the stored form of subject ids, and the usage report read from the file. The
transactions that count are `gateway.quota.sqlite.SqliteQuotaStore`'s."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from gateway import db
from gateway.quota.files import take_over_counters
from gateway.quota.report import report_from_counters

#: Longest subject id stored as is; longer ones (or ones SQLite cannot encode) are hashed.
MAX_SUBJECT_CHARS = 200


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


def connect(path: str, migrate_from: str | None = None, *, lock_wait: float = 30.0
            ) -> sqlite3.Connection:
    """A connection set up like `gateway.db.open_database`'s, usable from any of the limiter's
    threads (one at a time: a connection is taken from the pool for each transaction).
    `lock_wait`: seconds to wait for the write lock when the file still needs its schema."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=lock_wait, isolation_level=None,
                           check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {max(int(lock_wait * 1000), 1)}")
    db.enable_wal(conn, timeout=lock_wait)
    conn.execute("PRAGMA synchronous = NORMAL")
    # Checkpoints (copying the WAL back, with an fsync) run in a thread
    # (`SqliteQuotaStore._checkpoint`): a quota commit may run on the event loop.
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    # Both steps take the write lock, so they run only while the file still needs them: a
    # worker opening a connection while another holds the lock does not wait for it.
    if not _has_schema(conn):
        db.ensure_quota_schema(sqlite_utils.Database(conn))
    if migrate_from is not None and path != ":memory:" and not _taken_over(conn):
        take_over_counters(conn, migrate_from)
    # From here only `begin_immediate` waits for the lock (statements inside a transaction
    # that holds it never do).
    conn.execute("PRAGMA busy_timeout = 0")
    return conn


def _has_schema(conn: sqlite3.Connection) -> bool:
    names = {row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE name IN "
        "('quota_counters', 'quota_reservations', 'quota_reservations_expiry')")}
    return len(names) == 3


def _taken_over(conn: sqlite3.Connection) -> bool:
    """The counters of an earlier version's database were taken over already (or there is no
    record of it yet: then `take_over_counters` decides, under the lock)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'quota_meta'").fetchone():
        return False
    return conn.execute("SELECT 1 FROM quota_meta WHERE key = 'taken_over'").fetchone() is not None


def subject_key(subject: str) -> str:
    """The stored form of a subject id: itself when short and encodable, else a digest (a
    million-character or lone-surrogate user id must neither bloat nor break the table)."""
    try:
        subject.encode("utf-8")
    except UnicodeEncodeError:
        return "sha256:" + hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()
    if len(subject) > MAX_SUBJECT_CHARS:
        return "sha256:" + hashlib.sha256(subject.encode("utf-8")).hexdigest()
    return subject


def usage_report(conn: sqlite3.Connection, project_id: str, now: datetime, *,
                 budget: Mapping[str, Mapping[str, int]] | None = None,
                 user_quota: Mapping[str, Mapping[str, int]] | None = None, top: int = 10
                 ) -> dict[str, Any]:
    """The current-window counters of a project and of its `top` users (most requests first),
    for `python -m gateway usage`. Counters include open reservations."""
    rows = conn.execute(
        "SELECT subject_kind, subject_id, unit, window, window_start, used FROM quota_counters "
        "WHERE project_id = ?", (subject_key(project_id),)).fetchall()
    open_reservations = conn.execute("SELECT count(*) FROM quota_reservations").fetchone()[0]
    return report_from_counters(rows, project_id, now, budget=budget, user_quota=user_quota,
                                top=top, open_reservations=open_reservations)
