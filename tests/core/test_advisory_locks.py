"""Each kind of PostgreSQL write orders itself with an advisory lock of its own: two kinds
sharing a key would make every replica's event inserts wait behind identity and policy
writes (and time out), and the other way round."""

from __future__ import annotations

from gateway.events.pg_store import EVENT_ORDER_LOCK
from gateway.storage import migrations, policies, sql


def test_every_advisory_lock_has_its_own_key() -> None:
    keys = {"event order": EVENT_ORDER_LOCK, "store writes": sql._WRITE_LOCK,
            "policy sources": policies._SOURCES_LOCK,
            "migrations": migrations._PG_MIGRATION_LOCK}
    assert len(set(keys.values())) == len(keys), keys
