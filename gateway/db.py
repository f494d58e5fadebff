"""The embedded SQLite database: opening it the same way everywhere, and its schema.

Every process (each hypercorn worker, the CLI) opens its own connections. WAL mode lets readers
run beside the one writer, and `busy_timeout` makes a writer wait for the lock instead of failing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from gateway.storage.migrations import SchemaState, SqliteMigration, migrate_sqlite


def open_database(path: str | Path, *, check_same_thread: bool = True,
                  busy_timeout: float = 30.0) -> sqlite_utils.Database:
    """Open (creating if needed) the database at `path`, with the schema in place.

    `check_same_thread=False` is for a connection used from one task that hops worker threads
    (the event writer); the caller then guarantees calls never overlap. `busy_timeout` is how
    long any statement waits for another connection's lock."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None,
                           check_same_thread=check_same_thread)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    enable_wal(conn, busy_timeout)
    # NORMAL is durable across application crashes in WAL mode; only a power loss may lose the
    # last transactions, which is the usual trade-off for a gateway's audit trail.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    db = sqlite_utils.Database(conn)
    ensure_schema(db)
    return db


class DatabaseOnDemand:
    """A connection for a task that runs its calls on worker threads (never two at once),
    opened on first use with a short lock wait. `close()` it after a failure: the next use
    opens a fresh connection, so a removed or replaced file is picked up."""

    def __init__(self, path: str, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._db: sqlite_utils.Database | None = None

    def get(self) -> sqlite_utils.Database:
        if self._db is None:
            self._db = open_database(self.path, check_same_thread=False,
                                     busy_timeout=self.busy_timeout)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.conn.close()
            self._db = None


def enable_wal(conn: sqlite3.Connection, timeout: float = 30.0) -> None:
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


def ensure_schema(db: sqlite_utils.Database) -> SchemaState:
    """Apply the pending migrations (`SQLITE_MIGRATIONS`). Safe to run from several processes;
    SchemaMismatch when the file was migrated by a newer gateway."""
    return migrate_sqlite(db.conn, SQLITE_MIGRATIONS, where=_where(db))


def _where(db: sqlite_utils.Database) -> str:
    row = db.conn.execute("PRAGMA database_list").fetchone()
    return (row[2] if row and row[2] else ":memory:")


def _initial_schema(conn: sqlite3.Connection) -> None:
    """Migration 1: the schema every release before versioned migrations created. Each statement
    is "if not exists", so a file made by such a release adopts it unchanged."""
    db = sqlite_utils.Database(conn)
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
    _ensure_event_tables(db)
    _ensure_quota_tables(db)
    db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
    # The version before `schema_version` existed; kept for tools that read it.
    db.conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '1')")
    _ensure_identity_version(db)


#: SQLite's migrations, in order: (version, name, apply). Never edit one that has shipped.
SQLITE_MIGRATIONS: tuple[SqliteMigration, ...] = (
    (1, "accounts, keys, projects, grants, revisions, events, quotas", _initial_schema),
)
SCHEMA_VERSION = SQLITE_MIGRATIONS[-1][0]


#: The tables the request path keeps a snapshot of (`gateway.identity.keys.IdentityCache`).
IDENTITY_TABLES = ("accounts", "api_keys", "projects", "project_grants")


def _ensure_identity_version(db: sqlite_utils.Database) -> None:
    # Events and quota counters commit to this file all the time; only a change to these tables
    # must make the request path reload its snapshot. Triggers count such changes, whichever
    # process or tool makes them.
    db.conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('identity_version', '0')")
    bump = ("UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
            "WHERE key = 'identity_version'")
    for table in IDENTITY_TABLES:
        for change in ("INSERT", "UPDATE", "DELETE"):
            db.conn.execute(f"CREATE TRIGGER IF NOT EXISTS {table}_{change.lower()}_identity "
                            f"AFTER {change} ON {table} BEGIN {bump}; END")


def identity_version(db: sqlite_utils.Database) -> int:
    """How many times keys, accounts, projects or grants changed (see `_ensure_identity_version`)."""
    row = db.conn.execute("SELECT value FROM meta WHERE key = 'identity_version'").fetchone()
    return int(row[0]) if row else 0


#: Columns of `policy_events` holding JSON (lists and objects of an event, docs/events.md).
EVENT_JSON_COLUMNS = ("triggered_categories", "allowlist_hits", "denylist_hits",
                      "redacted_spans", "usage", "scenario_categories", "extra")
#: Columns of `policy_events` holding booleans (0/1).
EVENT_BOOL_COLUMNS = ("enforced", "stream")
#: Every column of `policy_events` but `seq`, in the order docs/events.md lists the fields; `extra`
#: holds other fields.
EVENT_COLUMNS = (
    "event_id", "event_type", "source", "created_at", "user_id", "org_id", "policy_id",
    "policy_name", "policy_revision", "data_classification", "decision", "effective_decision",
    "enforced", "rollout_mode", "reason_code", "triggered_categories", "allowlist_hits",
    "denylist_hits", "redacted_spans", "policy_target", "policy_user", "quota_subject",
    "project_id", "project_label", "model", "surface", "stream", "status", "usage",
    "latency_ms", "overhead_ms", "outcome", "scenario_categories", "edit_type",
    "config_snapshot", "extra",
)
_EVENT_TYPES = {"policy_revision": "INTEGER", "enforced": "INTEGER", "stream": "INTEGER",
                "status": "INTEGER", "latency_ms": "REAL", "overhead_ms": "REAL"}


def _ensure_event_tables(db: sqlite_utils.Database) -> None:
    # AUTOINCREMENT: `seq` never goes back, even after old rows are deleted, so a history
    # cursor ("older than seq N") and a connector's progress stay valid forever. SQLite has
    # one writer at a time, so commit order is seq order across worker processes too.
    columns = ", ".join(f"{name} {_EVENT_TYPES.get(name, 'TEXT')}"
                        + (" NOT NULL UNIQUE" if name == "event_id" else "")
                        for name in EVENT_COLUMNS)
    db.conn.execute(f"CREATE TABLE IF NOT EXISTS policy_events "
                    f"(seq INTEGER PRIMARY KEY AUTOINCREMENT, {columns})")
    events = db.table("policy_events")
    # Each history filter narrows by one column and pages by seq: (column, seq) serves both.
    # org_id: an account's admin reads its own account's history (gateway/admin/auth.py).
    for column in ("project_id", "policy_id", "policy_target", "policy_user", "decision",
                   "event_type", "created_at", "org_id"):
        events.create_index([column, "seq"], if_not_exists=True)
    # `events query --request-id` / `?request_id=`: the id is kept in `extra`.
    db.conn.execute("CREATE INDEX IF NOT EXISTS idx_policy_events_request_id ON policy_events "
                    "(json_extract(extra, '$.request_id'))")
    # A connector's delivery progress: the highest seq it delivered (docs/events.md).
    db.table("event_deliveries").create(
        {"connector": str, "delivered_seq": int, "delivered": int, "failures": int,
         "last_error": str, "updated_at": str},
        pk="connector", not_null={"connector", "delivered_seq"}, if_not_exists=True)
    # Which worker process delivers a connector's events, until when (gateway/events/leases.py).
    db.conn.execute("CREATE TABLE IF NOT EXISTS connector_leases (connector TEXT PRIMARY KEY, "
                    "owner TEXT NOT NULL, expires_at REAL NOT NULL)")


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


def ensure_quota_schema(db: sqlite_utils.Database) -> None:
    """The quota tables alone, for the quota store's own file (gateway/quota/sqlite.py)."""
    with db.conn:
        db.conn.execute("BEGIN IMMEDIATE")
        _ensure_quota_tables(db)


def _ensure_quota_tables(db: sqlite_utils.Database) -> None:
    """Quota counters and open reservations (docs/quotas.md, `gateway.quota.sqlite`)."""
    # One row per counter; `used` includes open reservations. `subject_id` is the project id
    # (kind `project`) or the quota subject within `project_id` (kind `user`).
    db.conn.execute(
        "CREATE TABLE IF NOT EXISTS quota_counters (project_id TEXT NOT NULL, "
        "subject_kind TEXT NOT NULL, subject_id TEXT NOT NULL, unit TEXT NOT NULL, "
        "window TEXT NOT NULL, window_start INTEGER NOT NULL, used INTEGER NOT NULL, "
        "PRIMARY KEY (project_id, subject_kind, subject_id, unit, window, window_start)) "
        "WITHOUT ROWID")
    # A reservation not settled by `expires_at` (unix seconds) belonged to a dead process: the
    # next admission gives it back. `counters` is the JSON list of the counter keys it holds.
    db.conn.execute(
        "CREATE TABLE IF NOT EXISTS quota_reservations (id TEXT PRIMARY KEY, "
        "expires_at REAL NOT NULL, tokens INTEGER NOT NULL, counters TEXT NOT NULL)")
    db.conn.execute("CREATE INDEX IF NOT EXISTS quota_reservations_expiry "
                    "ON quota_reservations (expires_at)")


def now_iso() -> str:
    """Now, as the timestamps the database stores (UTC, to the second)."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
