"""The PostgreSQL event store against a real server: batches, hostile values, at-most-once
retries, and commit order with several replicas writing at once (readers paging by seq never
skip a row that commits late)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_event_store import enforcement

from gateway.cli import main as cli
from gateway.events.history_query import HistoryQuery
from gateway.events.pg_store import PgEventStore, pg_query_history
from gateway.events.store import row_to_event
from gateway.storage.postgres import Postgres
from gateway.storage.settings import PostgresSettings


def event(**fields: Any) -> dict[str, Any]:
    return {**enforcement(), **fields}


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Postgres]:
    with Postgres(PostgresSettings(url=postgres_url, pool_min_size=0, pool_max_size=4)) as pool:
        yield pool


def stored(pg: Postgres) -> list[dict[str, Any]]:
    def read(conn: Any) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        return conn.cursor(row_factory=dict_row).execute(
            "SELECT * FROM policy_events ORDER BY seq").fetchall()

    return [row_to_event(row) for row in pg.run_sync(read)]


def test_a_batch_is_stored_and_reads_back_exactly(pg: Postgres) -> None:
    events = [event(policy_user=f"u{i}", window={"n": i}) for i in range(700)]
    PgEventStore(pg).write(events)
    assert stored(pg) == events
    page, cursor = pg.run_sync(pg_query_history, HistoryQuery(filters={"policy_user": "u3"}))
    assert [e["event_id"] for e in page] == [events[3]["event_id"]] and cursor is None


def test_a_retried_batch_stores_each_event_once(pg: Postgres) -> None:
    events = [event() for _ in range(5)]
    store = PgEventStore(pg)
    store.write(events[:3])
    store.write(events)  # the first three again: committed before the answer was lost
    assert [e["event_id"] for e in stored(pg)] == [e["event_id"] for e in events]


def test_a_hostile_value_does_not_hold_back_its_batch(pg: Postgres) -> None:
    nul_model = event(model="gpt\x00x", request_id="r-\x00", note="a\x00b")
    events = [event(), nul_model, event()]
    store = PgEventStore(pg)
    store.write(events)
    rows = stored(pg)
    assert [e["event_id"] for e in rows] == [e["event_id"] for e in events]
    assert rows[1]["model"] == "gpt\ufffdx" and rows[1]["note"] == "a\ufffdb"
    assert store.rejected == 0


def test_pages_by_cursor_are_newest_first_without_gaps(pg: Postgres) -> None:
    events = [event(policy_user=str(i)) for i in range(25)]
    PgEventStore(pg).write(events)
    seen: list[str] = []
    query = HistoryQuery(limit=10)
    while True:
        page, cursor = pg.run_sync(pg_query_history, query)
        seen += [e["event_id"] for e in page]
        if cursor is None:
            break
        query = HistoryQuery.from_params({"limit": ["10"], "cursor": [cursor]})
    assert seen == [e["event_id"] for e in reversed(events)]


def test_concurrent_replicas_commit_in_seq_order(postgres_url: str) -> None:
    """Three writers (three pools, as three replicas), each committing small batches with a
    pause inside the transaction; a reader tails by `seq > last` like a connector. Were seq
    and commit order apart, the tail would step past a late commit and miss it."""
    writers = [Postgres(PostgresSettings(url=postgres_url, pool_min_size=0, pool_max_size=2))
               for _ in range(3)]
    reader = Postgres(PostgresSettings(url=postgres_url, pool_min_size=0, pool_max_size=1))
    written: list[str] = []
    done = threading.Event()

    class SlowCommit(PgEventStore):
        def _insert_all(self, conn: Any, rows: Any) -> None:
            with conn.transaction():
                super()._insert_all(conn, rows)
                time.sleep(0.002)  # seq drawn, not yet committed: the window that matters

    def write(pool: Postgres, replica: int) -> None:
        store = SlowCommit(pool, lock_timeout=5.0)
        for batch in range(40):
            events = [event(policy_user=f"r{replica}-{batch}-{i}") for i in range(3)]
            store.write(events)
            written.extend(e["event_id"] for e in events)

    def tail() -> list[str]:
        seen: list[str] = []
        last = 0
        while True:
            finished = done.is_set()
            rows = reader.run_sync(lambda conn, after: conn.execute(
                "SELECT seq, event_id FROM policy_events WHERE seq > %s ORDER BY seq",
                (after,)).fetchall(), last)
            for seq, event_id in rows:
                seen.append(event_id)
                last = seq
            if finished:
                return seen

    threads = [threading.Thread(target=write, args=(w, n)) for n, w in enumerate(writers)]
    result: list[list[str]] = []
    tailer = threading.Thread(target=lambda: result.append(tail()))
    try:
        tailer.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        done.set()
        tailer.join()
    finally:
        for pool in (*writers, reader):
            pool.close()
    assert len(written) == 360
    assert sorted(result[0]) == sorted(written), "the tail missed or repeated an event"


def test_events_query_and_tail_read_postgres(pg: Postgres, postgres_url: str, tmp_path,
                                             capsys) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[database]\npath = "{tmp_path / "cli.db"}"\nurl = "{postgres_url}"\n')
    wanted = event(decision="refuse", request_id="req-42")
    PgEventStore(pg).write([event(), wanted, event()])
    assert cli.main(["events", "query", "--config", str(config), "--request-id", "req-42",
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [e["event_id"] for e in out["data"]] == [wanted["event_id"]]
    assert cli.main(["events", "tail", "--config", str(config), "-n", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and wanted["event_id"] in lines[0]


def test_an_event_postgres_refuses_outright_is_counted_and_the_rest_stored(pg: Postgres,
                                                                          caplog) -> None:
    too_big = event(policy_revision=2**40)  # past INTEGER: no replacement makes it fit
    events = [event(), too_big, event()]
    store = PgEventStore(pg)
    store.write(events)
    assert [e["event_id"] for e in stored(pg)] == [events[0]["event_id"], events[2]["event_id"]]
    assert store.rejected == 1
    assert too_big["event_id"] in caplog.text


def test_a_policy_added_by_the_cli_records_its_revision_event_in_postgres(
        pg: Postgres, postgres_url: str, tmp_path) -> None:
    # The CLI records the revision; its event must reach the shared history (and so every
    # replica's connectors), not a SQLite file of the machine it ran on.
    config = tmp_path / "gateway.toml"
    config.write_text(f'[database]\npath = "{tmp_path / "cli.db"}"\nurl = "{postgres_url}"\n\n'
                      f'[policies]\ndirectory = "{tmp_path / "policies"}"\n')
    (tmp_path / "policies").mkdir()
    source = tmp_path / "cli_guard.pol"
    source.write_text('policy v1 "cli_guard" {\n  name "Guard"\n  default allow\n}\n')
    assert cli.main(["policies", "add", str(source), "--config", str(config)]) == 0
    revisions = [e for e in stored(pg) if e["event_type"] == "revision"]
    assert [(e["policy_id"], e["policy_revision"]) for e in revisions] == [("cli_guard", 1)]
