"""Part 3 of `bench events`: the PostgreSQL event store next to the SQLite one, in one run.

- The writer alone: the same `_writer_run` as the SQLite figure (same events, same default
  `[events]` settings), with `PgEventStore` on a fresh migrated database; best of three.
- Three writers at once, each with its own pool (three replicas): their batches take turns on
  the commit-order lock (gateway/events/pg_store.py); total events/second.
- `/policy/chat/completions` p50/p99, sequential requests alternating between a gateway whose
  events go to SQLite, one whose events go to PostgreSQL, and a second SQLite one (A/A noise).

PostgreSQL runs as the tests run it (tests/postgres_server.py): initdb in a temporary
directory, on 127.0.0.1, with fsync and synchronous_commit off. Those are test settings, so
the figures compare the two writers' own costs, not disk durability.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel

from bench.bench_events import (
    _writer_run,
    alternating_times,
    gateway,
    percentiles,
    sample_event,
)
from gateway.events.pg_store import PgEventStore
from gateway.events.sink import QueueSink
from gateway.events.store import EventSettings, EventWriter
from gateway.storage.postgres import Postgres
from gateway.storage.settings import PostgresSettings


@contextmanager
def postgres_database() -> Iterator[tuple[Any, str]]:
    """A running PostgreSQL with the gateway's schema: (server, template database url)."""
    from postgres_server import PostgresServer

    server = PostgresServer().start()
    try:
        yield server, server.create_migrated_template()
    finally:
        server.remove()


def _fresh(server: Any, name: str) -> str:
    from postgres_server import MIGRATED_TEMPLATE

    return str(server.create_database(name, MIGRATED_TEMPLATE))


def _pg_writer_run(url: str, total: int) -> dict[str, Any]:
    with Postgres(PostgresSettings(url=url)) as pg:
        return trio.run(_writer_run, PgEventStore(pg), total)


async def _replicas_run(urls: list[str], total: int) -> float:
    """Three writers (three pools) emptying a queue each at once; events/second in total."""
    pools = [Postgres(PostgresSettings(url=url)) for url in urls]
    settings = EventSettings(queue_capacity=total)
    writers = []
    all_written = trio.Event()

    def check() -> None:
        if all(w.written >= total for w in writers):
            all_written.set()

    for pool in pools:
        sink = QueueSink(total, recent=0)
        writers.append(EventWriter(sink, PgEventStore(pool, lock_timeout=10.0), settings))
        writers[-1].on_written.append(check)
    try:
        async with trio.open_nursery() as nursery:
            for writer in writers:
                await nursery.start(writer.run)
            started = time.perf_counter()
            for offset in range(0, total, 1000):
                for writer in writers:
                    for index in range(offset, min(offset + 1000, total)):
                        writer.sink.emit(sample_event(index))
                await trio.lowlevel.checkpoint()
            await all_written.wait()
            elapsed = time.perf_counter() - started
            for writer in writers:
                await writer.drain()
            nursery.cancel_scope.cancel()
    finally:
        for pool in pools:
            pool.close()
    assert all(w.sink.dropped == 0 and w.failures == 0 for w in writers)
    return len(writers) * total / elapsed


def writer_figures(directory: Path, server: Any, quick: bool) -> dict[str, Any]:
    total = 10_000 if quick else 50_000
    trio.run(_writer_run, directory / "pg-sqlite-warmup.db", 2_000)
    sqlite_runs, pg_runs = [], []
    for i in range(3):  # interleaved, so both see the same machine load
        sqlite_runs.append(trio.run(_writer_run, directory / f"pg-sqlite{i}.db", total))
        pg_runs.append(_pg_writer_run(_fresh(server, f"writer{i}"), total))
    replicas = trio.run(_replicas_run, [_fresh(server, "replicas")] * 3, total // 3)
    return {"events": total,
            "sqlite_events_per_second": max(r["events_per_second"] for r in sqlite_runs),
            "postgres_events_per_second": max(r["events_per_second"] for r in pg_runs),
            "runs_sqlite": [r["events_per_second"] for r in sqlite_runs],
            "runs_postgres": [r["events_per_second"] for r in pg_runs],
            "postgres_three_writers_events_per_second": round(replicas)}


def http_figures(directory: Path, server: Any, quick: bool) -> dict[str, Any]:
    from mock_upstream import MockUpstream

    rounds, warmup = (200, 20) if quick else (1000, 50)
    with MockUpstream() as upstream, \
            gateway(directory / "events-sqlite", upstream.url, None) as on_sqlite, \
            gateway(directory / "events-pg", upstream.url, None,
                    _fresh(server, "http")) as on_pg, \
            gateway(directory / "events-sqlite-again", upstream.url, None) as again:
        times = alternating_times({"sqlite": on_sqlite, "postgres": on_pg,
                                   "sqlite_again": again}, rounds, warmup)
    figures = {name: percentiles(samples) for name, samples in times.items()}
    paired = statistics.median(a - b for a, b in zip(times["postgres"], times["sqlite"],
                                                     strict=True))
    return {**figures, "requests_each": rounds,
            "p50_ratio_postgres_to_sqlite": round(figures["postgres"]["p50_ms"]
                                                  / figures["sqlite"]["p50_ms"], 3),
            "p99_ratio_postgres_to_sqlite": round(figures["postgres"]["p99_ms"]
                                                  / figures["sqlite"]["p99_ms"], 3),
            "paired_median_difference_ms": round(paired * 1000, 3)}


def postgres_figures(directory: Path, quick: bool, http: bool) -> dict[str, Any]:
    with postgres_database() as (server, _):
        results: dict[str, Any] = {"writer": writer_figures(directory, server, quick)}
        if http:
            results["http"] = http_figures(directory, server, quick)
    return results
