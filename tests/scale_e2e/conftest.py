"""Three gateway replicas sharing one real redis-server (docs/scale-out.md).

Each replica is its own `python -m gateway serve` process with its own data directory, SQLite
file and policies: three machines, as far as the gateway can tell. Only Redis is shared. A
project and its key are made on replica 0 through the CLI and copied into the other two files,
as an operator provisions every machine alike.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mock_upstream import MockUpstream
from quota_e2e.conftest import Workers, start_workers, stop_workers
from redis_server import RedisServer

HERE = Path(__file__).parent
IDENTITY_TABLES = ("accounts", "api_keys", "projects", "project_grants")


@dataclass
class Replicas:
    redis: RedisServer
    members: list[Workers]

    @property
    def urls(self) -> list[str]:
        return [member.url for member in self.members]

    def project(self, **kwargs: Any) -> tuple[str, str]:
        """A project (see `Workers.project`) known to every replica: (project id, key)."""
        project_id, key = self.members[0].project(**kwargs)
        for member in self.members[1:]:
            copy_identity(self.members[0].db_path, member.db_path)
        return project_id, key

    def counter(self, project_id: str, kind: str, unit: str, subject: str | None = None) -> int:
        """The current value of a counter in Redis (one window per unit in these tests)."""
        subject = subject or project_id
        keys = self.redis.command("KEYS", f"*{{{project_id}}}:c:{kind}:{subject}:{unit}:*")
        return sum(int(self.redis.command("GET", key) or 0) for key in keys)

    def settled(self, project_id: str, timeout: float = 10.0) -> None:
        """Wait until no reservation of the project is open (settlement runs after the answer)."""
        deadline = time.monotonic() + timeout
        while self.redis.command("KEYS", f"*{{{project_id}}}:r:*"):
            assert time.monotonic() < deadline, "a reservation was never settled or released"
            time.sleep(0.02)

    def events(self, project_id: str) -> list[dict[str, Any]]:
        """Every replica's enforcement events of the project (each replica has its own file)."""
        out = []
        for member in self.members:
            with sqlite3.connect(member.db_path, timeout=30) as conn:
                conn.row_factory = sqlite3.Row
                out += [dict(row) for row in conn.execute(
                    "SELECT * FROM policy_events WHERE project_id = ?", (project_id,))]
        return out


def copy_identity(source: Path, target: Path) -> None:
    with sqlite3.connect(target, timeout=30) as conn:
        conn.execute("ATTACH DATABASE ? AS source", (str(source),))
        for table in IDENTITY_TABLES:
            conn.execute(f"INSERT OR REPLACE INTO main.{table} SELECT * FROM source.{table}")
        conn.commit()
        conn.execute("DETACH DATABASE source")


def redis_config(redis: RedisServer, on_store_error: str = "closed") -> str:
    # Added inside [quotas] by start_workers; then a section of its own. A request budget a
    # loaded machine's bursts stay within (a call timing out would fail closed, a 503 where a
    # test expects 200 or 429); a killed Redis is refused at once, whatever the budget.
    return (f'store = "redis"\non_store_error = "{on_store_error}"\n\n'
            f'[redis]\nurl = "{redis.url}"\nkey_prefix = "e2e:"\nrequest_timeout_ms = 2000\n')


def wait_for_events(replicas: Replicas, project_id: str, count: int,
                    timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        events = replicas.events(project_id)
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def start_replicas(root: Path, mock_url: str, redis: RedisServer, count: int,
                   on_store_error: str = "closed") -> Replicas:
    members: list[Workers] = []
    try:
        for index in range(count):
            members.append(start_workers(
                root / f"replica{index}", mock_url, processes=1,
                extra_config=redis_config(redis, on_store_error),
                extra_policies=tuple((HERE / "policies").glob("*.pol"))))
    except BaseException:
        for member in members:
            stop_workers(member)
        raise
    return Replicas(redis=redis, members=members)


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this module's own (tests kill it), persisting every write (AOF,
    fsync always) so that a restart keeps the counters, as production's should."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), appendonly=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicas(mock_upstream: MockUpstream, shared_redis: RedisServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    running = start_replicas(tmp_path_factory.mktemp("replicas"), mock_upstream.url,
                             shared_redis, 3)
    yield running
    for member in running.members:
        stop_workers(member)


@pytest.fixture
def redis_up(replicas: Replicas) -> Replicas:
    """The replicas, with Redis started again if the previous test left it down."""
    if not replicas.redis.ping():
        replicas.redis.start()
    return replicas
