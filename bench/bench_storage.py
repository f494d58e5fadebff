"""PostgreSQL as the shared store: the driver on trio, the identity snapshot, and how a change
reaches a replica (poll vs LISTEN/NOTIFY). Figures for docs/scale-out.md.

Runs a local PostgreSQL (tests/postgres_server.py: initdb + pg_ctl, durability off as in the
tests, which flatters writes but not these reads). Measures:
- one round trip (`SELECT` of the change counters) called directly, and from trio through
  `Postgres.run` (a worker thread behind the pool-sized CapacityLimiter), p50 / p99;
- the same from 32 concurrent trio tasks (pool of 4): calls per second;
- reading the whole identity snapshot of N accounts, keys and projects;
- a change's delay to reach a replica: the 250 ms counter poll, and LISTEN/NOTIFY.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import psycopg  # noqa: E402
import trio  # noqa: E402
from postgres_server import PostgresServer  # noqa: E402

from gateway.identity.shared import read_snapshot  # noqa: E402
from gateway.storage.changes import read_versions  # noqa: E402
from gateway.storage.postgres import Postgres, migrate  # noqa: E402
from gateway.storage.settings import PostgresSettings  # noqa: E402


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return f"p50 {statistics.median(ordered) * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms"


def _direct(pg: Postgres, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        pg.run_sync(read_versions)
        samples.append(time.perf_counter() - started)
    return samples


async def _through_trio(pg: Postgres, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await pg.run(read_versions)
        samples.append(time.perf_counter() - started)
    return samples


async def _concurrent(pg: Postgres, tasks: int, each: int) -> float:
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            async def worker() -> None:
                for _ in range(each):
                    await pg.run(read_versions)
            nursery.start_soon(worker)
    return tasks * each / (time.perf_counter() - started)


def _populate(url: str, size: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for n in range(size):
            conn.execute("INSERT INTO accounts VALUES (%s, %s, 'control', 'now')",
                         (f"acct_{n}", f"a{n}"))
            conn.execute("INSERT INTO projects VALUES (%s, %s, 'p', 'active', NULL, '{}', '{}', "
                         "0, 'now', 'now')", (f"proj_{n}", f"acct_{n}"))
            conn.execute("INSERT INTO api_keys VALUES (%s, %s, %s, '', %s, 'ak_...', 0, 'now', "
                         "NULL)", (f"key_{n}", f"acct_{n}", f"proj_{n}", secrets.token_hex(32)))


def _notify_delay(url: str, rounds: int) -> list[float]:
    """LISTEN on one connection, bump the counter on another; the delay until it arrives."""
    delays: list[float] = []
    with psycopg.connect(url, autocommit=True) as listener, \
            psycopg.connect(url, autocommit=True) as writer:
        listener.execute("LISTEN gateway_identity")
        for n in range(rounds):
            sent = time.perf_counter()
            writer.execute("UPDATE accounts SET name = %s WHERE id = 'acct_0'", (f"n{n}",))
            for _ in listener.notifies(timeout=5, stop_after=1):
                delays.append(time.perf_counter() - sent)
    return delays


def _poll_delay(pg: Postgres, url: str, rounds: int, interval: float) -> list[float]:
    """A poller reading the counters every `interval`; the delay until it sees a change."""
    seen: dict[str, float] = {}
    stop = threading.Event()
    last = pg.run_sync(read_versions)["identity"]

    def poll() -> None:
        nonlocal last
        while not stop.is_set():
            version = pg.run_sync(read_versions)["identity"]
            if version != last:
                seen[str(version)] = time.perf_counter()
                last = version
            stop.wait(interval)

    thread = threading.Thread(target=poll)
    thread.start()
    delays = []
    with psycopg.connect(url, autocommit=True) as writer:
        for n in range(rounds):
            time.sleep(interval * 1.37)  # not in step with the poller
            sent = time.perf_counter()
            writer.execute("UPDATE accounts SET name = %s WHERE id = 'acct_0'", (f"p{n}",))
            version = writer.execute("SELECT version FROM change_versions WHERE name = "
                                     "'identity'").fetchone()[0]
            deadline = time.monotonic() + 5
            while str(version) not in seen and time.monotonic() < deadline:
                time.sleep(0.001)
            delays.append(seen[str(version)] - sent)
    stop.set()
    thread.join()
    return delays


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--size", type=int, default=10000, help="accounts, keys, projects")
    args = parser.parse_args()
    server = PostgresServer().start()
    try:
        url = server.create_database("bench")
        settings = PostgresSettings(url=url, pool_min_size=4, pool_max_size=4)
        with Postgres(settings) as pg:
            migrate(pg)
            pg.run_sync(read_versions)  # the pool is warm
            print(f"round trip, direct:            {_ms(_direct(pg, args.calls))}")
            samples = trio.run(_through_trio, pg, args.calls)
            print(f"round trip, trio worker thread: {_ms(samples)}")
            rate = trio.run(_concurrent, pg, 32, args.calls // 32)
            print(f"32 trio tasks, pool of 4:       {rate:,.0f} calls/s")
            _populate(url, args.size)
            loads = []
            for _ in range(5):
                started = time.perf_counter()
                pg.run_sync(read_snapshot)
                loads.append(time.perf_counter() - started)
            print(f"identity snapshot, {args.size} each of accounts/keys/projects: "
                  f"median {statistics.median(loads) * 1000:.1f} ms")
            print(f"change delay, LISTEN/NOTIFY:    {_ms(_notify_delay(url, 50))}")
            print(f"change delay, 250 ms poll:      {_ms(_poll_delay(pg, url, 20, 0.25))}")
    finally:
        server.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
