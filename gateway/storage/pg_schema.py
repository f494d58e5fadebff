"""The PostgreSQL schema, as numbered migrations (run by `gateway.storage.migrations`).

Tables mirror the SQLite ones of `gateway.db` column for column, so the code that reads rows
is the same for both backends: timestamps are ISO text, booleans 0/1 integers, JSON is text.
Never edit a migration that has shipped; add the next one.
"""

from __future__ import annotations

from gateway.db import EVENT_COLUMNS

#: Channels the triggers notify on, for listeners that want a push besides the version poll.
IDENTITY_CHANNEL = "gateway_identity"
POLICY_CHANNEL = "gateway_policies"

_PG_EVENT_TYPES = {"policy_revision": "INTEGER", "enforced": "INTEGER", "stream": "INTEGER",
                   "status": "INTEGER", "latency_ms": "DOUBLE PRECISION",
                   "overhead_ms": "DOUBLE PRECISION"}

_IDENTITY = [
    """CREATE TABLE accounts (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, plan TEXT NOT NULL, created_at TEXT)""",
    """CREATE TABLE api_keys (
        id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id),
        project_id TEXT, label TEXT, key_hash TEXT NOT NULL UNIQUE, key_preview TEXT NOT NULL,
        revoked INTEGER NOT NULL, created_at TEXT, revoked_at TEXT)""",
    """CREATE TABLE projects (
        id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL, status TEXT NOT NULL, policy_id TEXT, budget TEXT NOT NULL,
        user_quota TEXT NOT NULL, allow_inline_policy INTEGER NOT NULL,
        created_at TEXT, updated_at TEXT)""",
    "CREATE INDEX projects_account_id ON projects (account_id)",
    """CREATE TABLE project_grants (
        user_id TEXT NOT NULL, project_id TEXT NOT NULL REFERENCES projects(id),
        created_at TEXT, PRIMARY KEY (user_id, project_id))""",
]

_POLICIES = [
    # One row per saved state of a policy; (policy_id, revision) is unique, so two replicas
    # can never both claim the same revision number.
    """CREATE TABLE policy_revisions (
        policy_id TEXT NOT NULL, revision INTEGER NOT NULL, edit_type TEXT NOT NULL,
        sha256 TEXT NOT NULL, source TEXT NOT NULL, name TEXT, classification TEXT, path TEXT,
        created_at TEXT, PRIMARY KEY (policy_id, revision))""",
    # The policies in force: one row per policy file, its text as written; every replica
    # mirrors them into a directory of its own and loads that. `directory_sha256` is the
    # content the configured policies directory last had for the file (GitOps import), so a
    # directory overrides the database only when the directory itself changes.
    """CREATE TABLE policy_sources (
        filename TEXT PRIMARY KEY, source TEXT NOT NULL, sha256 TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0, origin TEXT NOT NULL, updated_at TEXT NOT NULL,
        directory_sha256 TEXT)""",
]

_VERSIONS = [
    # Change counters: each replica polls them (a one-row read) and reloads its snapshot only
    # when one moved. Triggers bump them, whichever replica or tool made the change.
    "CREATE TABLE change_versions (name TEXT PRIMARY KEY, version BIGINT NOT NULL)",
    "INSERT INTO change_versions VALUES ('identity', 0), ('policies', 0)",
    f"""CREATE FUNCTION bump_change_version() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE bumped BIGINT;
    BEGIN
        UPDATE change_versions SET version = version + 1 WHERE name = TG_ARGV[0]
            RETURNING version INTO bumped;
        PERFORM pg_notify(CASE TG_ARGV[0] WHEN 'identity' THEN '{IDENTITY_CHANNEL}'
                          ELSE '{POLICY_CHANNEL}' END, bumped::text);
        RETURN NULL;
    END $$""",
    *(f"CREATE TRIGGER {table}_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
      f"FOR EACH STATEMENT EXECUTE FUNCTION bump_change_version('identity')"
      for table in ("accounts", "api_keys", "projects", "project_grants")),
    "CREATE TRIGGER policy_sources_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON "
    "policy_sources FOR EACH STATEMENT EXECUTE FUNCTION bump_change_version('policies')",
]


def _event_columns() -> str:
    return ", ".join(f"{name} {_PG_EVENT_TYPES.get(name, 'TEXT')}"
                     + (" NOT NULL UNIQUE" if name == "event_id" else "")
                     for name in EVENT_COLUMNS)


_EVENTS = [
    # `seq` comes from a sequence, so it never goes back; unlike SQLite's single writer,
    # concurrent transactions may commit out of seq order, which history cursors must allow for.
    f"CREATE TABLE policy_events (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    f"{_event_columns()})",
    *(f"CREATE INDEX policy_events_{column}_seq ON policy_events ({column}, seq)"
      for column in ("project_id", "policy_id", "policy_target", "policy_user", "decision",
                     "event_type", "created_at", "org_id")),
    "CREATE INDEX policy_events_request_id ON policy_events (((extra::jsonb) ->> 'request_id'))",
    # A connector's delivery progress: the highest seq it delivered.
    """CREATE TABLE event_deliveries (
        connector TEXT PRIMARY KEY, delivered_seq BIGINT NOT NULL, delivered BIGINT,
        failures BIGINT, last_error TEXT, updated_at TEXT)""",
    """CREATE TABLE connector_leases (
        connector TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL)""",
]

#: (version, name, statements), in order.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "identity, policies, events and connectors",
     (*_IDENTITY, *_POLICIES, *_VERSIONS, *_EVENTS)),
)
