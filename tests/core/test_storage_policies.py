"""Policy sources in PostgreSQL: a replica's mirror, writes published from it, and the GitOps
import of a configured directory, with the rule for who wins when the two disagree: the
directory overrides the database only when the directory itself changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.storage.policies import import_directory, publish, pull, safe_filename


def policy(word: str, policy_id: str = "p") -> str:
    return (f'policy v1 "{policy_id}" {{\n  name "P"\n  default allow\n'
            f'  denylist w = ["{word}"]\n  rule r {{ when input contains any of w then refuse }}\n'
            '}\n')


@pytest.fixture
def conn(postgres_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        yield connection


def _sources(conn: psycopg.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT filename, source FROM policy_sources WHERE deleted = 0"
                             ).fetchall())


def _version(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT version FROM change_versions WHERE name = 'policies'"
                        ).fetchone()[0]


def test_the_directory_wins_only_when_it_changes(conn: psycopg.Connection,
                                                 tmp_path: Path) -> None:
    gitops, mirror = tmp_path / "gitops", tmp_path / "mirror"
    gitops.mkdir()
    (gitops / "a.pol").write_text(policy("one", "a"))
    (gitops / "b.pol").write_text(policy("bee", "b"))
    assert sorted(import_directory(conn, gitops)) == ["a.pol", "b.pol"]
    assert import_directory(conn, gitops) == []  # unchanged: nothing written
    before = _version(conn)

    # An API write on some replica: its mirror file, published.
    assert pull(conn, mirror) is True
    (mirror / "a.pol").write_text(policy("two", "a"))
    (mirror / "c.pol").write_text(policy("sea", "c"))
    publish(conn, mirror, ["a.pol", "c.pol"])
    assert _version(conn) > before
    # Another replica restarts and imports the same, unchanged directory: the API's edit stays.
    assert import_directory(conn, gitops) == []
    assert _sources(conn)["a.pol"] == policy("two", "a")

    # The directory changes a.pol: now the directory's text wins.
    (gitops / "a.pol").write_text(policy("three", "a"))
    assert import_directory(conn, gitops) == ["a.pol"]
    assert _sources(conn)["a.pol"] == policy("three", "a")

    # Removing b.pol from the directory deletes it; c.pol, made through the API, stays.
    (gitops / "b.pol").unlink()
    assert import_directory(conn, gitops) == ["b.pol"]
    assert set(_sources(conn)) == {"a.pol", "c.pol"}


def test_pull_makes_the_mirror_equal_the_database(conn: psycopg.Connection,
                                                  tmp_path: Path) -> None:
    source, mirror = tmp_path / "source", tmp_path / "mirror"
    source.mkdir()
    (source / "a.pol").write_text(policy("x", "a"))
    import_directory(conn, source)
    mirror.mkdir()
    (mirror / "stale.pol").write_text(policy("old", "stale"))
    (mirror / "a.pol").write_text("edited by hand\n")
    (mirror / "notes.txt").write_text("not a policy file: left alone")
    assert pull(conn, mirror) is True
    assert sorted(p.name for p in mirror.iterdir()) == ["a.pol", "notes.txt"]
    assert (mirror / "a.pol").read_text() == policy("x", "a")
    assert pull(conn, mirror) is False  # nothing to do: no reload either


def test_publish_deletes_a_file_removed_from_the_mirror(conn: psycopg.Connection,
                                                        tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "a.pol").write_text(policy("x", "a"))
    publish(conn, mirror, ["a.pol"])
    (mirror / "a.pol").unlink()
    publish(conn, mirror, ["a.pol"])
    assert _sources(conn) == {}
    assert conn.execute("SELECT deleted FROM policy_sources WHERE filename = 'a.pol'"
                        ).fetchone()[0] == 1


def test_a_hostile_file_name_in_the_database_is_never_written(conn: psycopg.Connection,
                                                               tmp_path: Path) -> None:
    for name in ("../escape.pol", ".hidden.pol", "x.cases.json", "a/b.pol", "plain.txt"):
        assert not safe_filename(name)
        conn.execute("INSERT INTO policy_sources(filename, source, sha256, origin, updated_at) "
                     "VALUES (%s, 'policy', 'x', 'test', 'now')", (name,))
    pull(conn, tmp_path / "mirror")
    assert list((tmp_path / "mirror").iterdir()) == []
    assert not (tmp_path / "escape.pol").exists()


def test_a_replaced_revision_is_looked_up_in_memory_with_postgres(tmp_path: Path) -> None:
    """The rollback event of a replaced revision is built on the request path: with
    PostgreSQL (here one that does not exist) it must come from memory, never the database."""
    from redis_server import free_port

    from gateway.admin.registry import PolicyRegistry
    from gateway.config import Config
    from gateway.db import open_database
    from gateway.state import GatewayState

    config = Config.from_mapping({"database": {
        "path": str(tmp_path / "g.db"), "connect_timeout": 1.0,
        "url": f"postgresql://nobody@127.0.0.1:{free_port()}/none"}}, env={})
    state = GatewayState(config)
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "a.pol").write_text(policy("one", "a"))
    db = open_database(tmp_path / "g.db")
    state.registry = PolicyRegistry.load(folder, db)
    (folder / "a.pol").write_text(policy("two", "a"))
    state.registry = PolicyRegistry.load(folder, db)
    old = state._old_revision("a", 1)
    assert old is not None and old.source == policy("one", "a") and old.revision == 1
    assert state._old_revision("a", 9) is None


async def test_the_change_poller_survives_a_dropped_schema_and_reports_it(
        postgres_url: str) -> None:
    """Whatever PostgreSQL answers, the poller keeps running (the worker keeps serving from
    memory) and says why in its status, which `/readyz` shows; it recovers by itself."""
    import trio

    from gateway.storage.changes import ChangePoller
    from gateway.storage.postgres import Postgres
    from gateway.storage.settings import PostgresSettings

    refreshed: list[str] = []

    async def refresh() -> None:
        refreshed.append("identity")

    with Postgres(PostgresSettings(url=postgres_url, pool_max_size=2)) as pg:
        poller = ChangePoller(pg, 0.02)
        poller.watch("identity", refresh)

        async def until(done: Any) -> None:
            with trio.fail_after(5):
                while True:
                    if done():
                        return
                    await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            await nursery.start(poller.run)
            await until(lambda: refreshed)
            await pg.run(lambda c: c.execute("ALTER TABLE change_versions RENAME TO moved"))
            await until(lambda: poller.status() != "ok")
            assert "change_versions" in poller.status()
            await pg.run(lambda c: c.execute("ALTER TABLE moved RENAME TO change_versions"))
            await until(lambda: poller.status() == "ok")
            nursery.cancel_scope.cancel()


def test_a_writer_holding_the_lock_elsewhere_fails_a_write_in_time(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transaction stuck on another replica holding the write lock: a store write here waits
    `LOCK_WAIT_MS`, then fails as unavailable (a 503), instead of hanging a thread for good."""
    import gateway.storage.sql as sql_module
    from gateway.errors import DatabaseUnavailable, ProjectError
    from gateway.identity.projects import ProjectStore
    from gateway.storage.postgres import Postgres
    from gateway.storage.settings import PostgresSettings

    monkeypatch.setattr(sql_module, "LOCK_WAIT_MS", 200)
    with psycopg.connect(postgres_url) as stuck, \
            Postgres(PostgresSettings(url=postgres_url, pool_max_size=2)) as pg:
        stuck.execute("SELECT pg_advisory_xact_lock(%s)", (sql_module._WRITE_LOCK,))
        store = ProjectStore(sql_module.PostgresSql(pg))
        with pytest.raises(DatabaseUnavailable, match="lock timeout"):
            store.grant("alice", "proj_x")
        stuck.rollback()
        with pytest.raises(ProjectError, match="unknown project"):  # the lock is free again
            store.grant("alice", "proj_x")
