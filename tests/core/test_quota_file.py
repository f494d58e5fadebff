"""The SQLite quota store keeps its counters in a file of its own beside the database, so that
the event writer's batches never hold admission up; it takes over the counters an earlier
version kept in the database, once, and checkpoints its write-ahead log itself."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

from dsl import QuotaLimit
from gateway.config import Config
from gateway.db import open_database
from gateway.quota import sqlite as quota_sqlite
from gateway.quota.files import quota_database_path
from gateway.quota.limits import QuotaRequest
from gateway.quota.sqlite import SqliteQuotaStore

LIMITS = {"project_limits": (QuotaLimit("requests", "daily", 1000),
                             QuotaLimit("tokens", "daily", 10**9))}


def _config(tmp_path: Path) -> Config:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[database]\npath = "{tmp_path / "data" / "gw.db"}"\n')
    return Config.load(path, env={})


def _used(path: str) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT unit, used FROM quota_counters").fetchall())


def test_the_quota_file_is_beside_the_database_and_named_after_it(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert quota_database_path(config) == str(tmp_path / "data" / "gw-quotas.db")
    assert SqliteQuotaStore.from_config(config).path == quota_database_path(config)


async def test_admission_does_not_write_the_database(tmp_path: Path) -> None:
    config = _config(tmp_path)
    open_database(config.database_path).conn.close()
    store = SqliteQuotaStore.from_config(config)
    reservation = await store.admit(QuotaRequest("proj_a", "u", 10, **LIMITS))
    await store.settle(reservation, 3, 4)
    store.close()
    assert _used(quota_database_path(config)) == {"requests": 1, "tokens": 7}
    assert _used(config.database_path) == {}


async def test_counters_of_the_database_are_taken_over_once(tmp_path: Path) -> None:
    config = _config(tmp_path)
    earlier = SqliteQuotaStore(config.database_path)  # where earlier versions counted
    reservation = await earlier.admit(QuotaRequest("proj_a", "u", 10, **LIMITS))
    await earlier.settle(reservation, 20, 5)
    earlier.close()
    store = SqliteQuotaStore.from_config(config)
    reservation = await store.admit(QuotaRequest("proj_a", "u", 10, **LIMITS))
    await store.settle(reservation, 1, 1)
    store.close()
    assert _used(quota_database_path(config)) == {"requests": 2, "tokens": 27}
    # Counting on in the database afterwards is not taken over a second time.
    with sqlite3.connect(config.database_path) as conn:
        conn.execute("UPDATE quota_counters SET used = used + 100")
    again = SqliteQuotaStore.from_config(config)
    await again.settle(await again.admit(QuotaRequest("proj_a", "u", 10, **LIMITS)), 1, 0)
    again.close()
    assert _used(quota_database_path(config)) == {"requests": 3, "tokens": 28}


async def _wal_size_after(path: Path, settlements: int) -> int:
    store = SqliteQuotaStore(path)
    for _ in range(settlements):
        await store.settle(await store.admit(QuotaRequest("proj_a", "u", 10, **LIMITS)), 1, 1)
    size = (await trio.Path(f"{path}-wal").stat()).st_size
    store.close()
    return size


async def test_the_store_checkpoints_its_write_ahead_log(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(quota_sqlite, "CHECKPOINT_EVERY", 10**9)
    never = await _wal_size_after(tmp_path / "never.db", 30)
    monkeypatch.setattr(quota_sqlite, "CHECKPOINT_EVERY", 5)
    often = await _wal_size_after(tmp_path / "often.db", 30)
    # The loop's connections never checkpoint: without the store's own checkpoints the log
    # grows with every commit; after one, the next writer starts it from the beginning again.
    assert often < never / 2
