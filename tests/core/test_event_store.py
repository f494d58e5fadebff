"""The durable event pipeline without a server: queue, writer, storage, history queries, CLI."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from typing import Any

import pytest
import trio

from gateway.cli import main as cli
from gateway.db import open_database
from gateway.errors import EventStorageError, HistoryQueryError
from gateway.events.history_query import HistoryQuery, query_history
from gateway.events.sink import EVENT_FIELDS, QueueSink, RateLimitedLog, base_event
from gateway.events.store import (
    EventSettings,
    EventStore,
    EventWriter,
    event_to_row,
    row_to_event,
)


def enforcement(**fields: Any) -> dict[str, Any]:
    fields = {"decision": "allow", **fields}
    return base_event("enforcement", user_id="u1", org_id="acct", policy_id="p",
                      policy_name="P", policy_revision=3, data_classification="internal",
                      effective_decision="allow", enforced=True,
                      rollout_mode="enforced", reason_code=None, triggered_categories=["hate"],
                      allowlist_hits=["order"], denylist_hits=[], redacted_spans={"email": 2},
                      policy_target="input", policy_user="alice", quota_subject="alice",
                      project_id="proj", project_label="Proj", model="gpt-x", surface="chat",
                      stream=False, status=200, usage={"input_tokens": 5, "output_tokens": 7},
                      latency_ms=12.5, overhead_ms=1.25, outcome="completed", **fields)


def test_a_stored_row_gives_back_the_event_exactly():
    event = enforcement(window={"share_pct": 50.0}, reason="spike")
    row = event_to_row(event)
    assert json.loads(row["extra"]) == {"window": {"share_pct": 50.0}, "reason": "spike"}
    assert row["enforced"] == 1 and row["stream"] == 0
    db = open_database(":memory:")
    db["policy_events"].insert(row)
    stored = next(db.query("SELECT * FROM policy_events"))
    assert row_to_event(stored) == event


def test_a_stored_event_carries_every_field_of_its_class():
    revision = base_event("revision", policy_id="p", edit_type="create", config_snapshot="src")
    db = open_database(":memory:")
    db["policy_events"].insert(event_to_row(revision))
    stored = row_to_event(next(db.query("SELECT * FROM policy_events")))
    assert set(stored) == set(EVENT_FIELDS["revision"])
    assert (stored["user_id"], stored["edit_type"]) == (None, "create")
    assert "decision" not in stored


# --- the queue ------------------------------------------------------------------------------


async def test_a_full_queue_drops_counts_and_never_raises():
    sink = QueueSink(capacity=2, recent=0)
    for i in range(5):
        sink.emit({"event_id": str(i), "event_type": "enforcement"})
    assert (sink.accepted, sink.dropped, sink.depth) == (2, 3, 2)
    sink.close()
    sink.emit({"event_id": "late"})
    assert sink.dropped == 4
    assert [sink.receive.receive_nowait()["event_id"] for _ in range(2)] == ["0", "1"]


def test_the_drop_log_is_rate_limited(caplog):
    now = [100.0]
    limited = RateLimitedLog(interval=5.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="gateway.events.sink"):
        results = [limited.warning("dropped %d", i) for i in range(4)]
        now[0] += 5.0
        results.append(limited.warning("dropped %d", 4))
    assert results == [True, False, False, False, True]
    assert [r.getMessage() for r in caplog.records] == [
        "dropped 0", "dropped 4 (3 similar messages held back)"]


# --- the writer -----------------------------------------------------------------------------


class FlakyStore:
    """Records each batch written; fails the next `failures` attempts."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.batches: list[list[str]] = []
        self.attempts = 0

    def write(self, events: list[dict[str, Any]]) -> None:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise EventStorageError("database is locked")
        self.batches.append([e["event_id"] for e in events])

    def close(self) -> None:
        pass


def writer_with(store: FlakyStore, **settings: Any) -> EventWriter:
    config = EventSettings(**{"batch_size": 3, "batch_seconds": 0.05, "retry_initial": 0.01,
                              "retry_max": 0.02, "drain_timeout": 0.5, **settings})
    return EventWriter(QueueSink(config.queue_capacity, recent=0), store, config)  # type: ignore[arg-type]


async def test_the_writer_batches_up_to_batch_size():
    store = FlakyStore()
    writer = writer_with(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for i in range(7):
            writer.sink.emit({"event_id": str(i)})
        all_written = trio.Event()
        writer.on_written.append(lambda: writer.written == 7 and all_written.set())
        with trio.fail_after(5):
            await all_written.wait()
        await writer.drain()
    assert store.batches == [["0", "1", "2"], ["3", "4", "5"], ["6"]]


async def test_a_batch_is_written_once_full_without_waiting_out_its_window():
    store = FlakyStore()
    writer = writer_with(store, batch_seconds=60, batch_size=3)
    written = trio.Event()
    writer.on_written.append(written.set)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for i in range(3):  # the writer gathers them in the channel as they come
            writer.sink.emit({"event_id": str(i)})
            await trio.sleep(0.01)
        with trio.fail_after(5):  # far less than the 60 s window
            await written.wait()
        await writer.drain()
    assert store.batches == [["0", "1", "2"]]


async def test_the_writer_keeps_the_batch_across_failures_and_recovers():
    store = FlakyStore(failures=4)
    writer = writer_with(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        writer.sink.emit({"event_id": "a"})
        written = trio.Event()
        writer.on_written.append(written.set)
        with trio.fail_after(5):
            await written.wait()
        await writer.drain()
    assert (store.attempts, writer.failures, store.batches) == (5, 4, [["a"]])


async def test_drain_writes_what_the_task_still_held(autojump_clock):
    store = FlakyStore()
    writer = writer_with(store, batch_seconds=60, batch_size=100)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for i in range(5):
            writer.sink.emit({"event_id": str(i)})
        await trio.sleep(30)  # the task holds them, waiting for its 60 s batch window (mock clock)
        assert store.batches == []
        await writer.drain()
    assert store.batches == [["0", "1", "2", "3", "4"]]
    assert writer.lost == 0


async def test_drain_gives_up_after_its_timeout_and_counts_the_loss(autojump_clock):
    store = FlakyStore(failures=10**6)
    writer = writer_with(store, drain_timeout=0.1)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        for i in range(4):
            writer.sink.emit({"event_id": str(i)})
        await trio.sleep(0.1)
        with trio.fail_after(5):
            await writer.drain()
    assert store.batches == [] and writer.lost == 4


def test_a_removed_database_file_fails_once_then_is_recreated(tmp_path):
    path = tmp_path / "events.db"
    store = EventStore(path, busy_timeout=0.1)
    store.write([enforcement()])
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.remove(f"{path}{suffix}")
    with pytest.raises(EventStorageError):
        store.write([enforcement()])
    again = enforcement()
    store.write([again])
    store.close()
    rows = list(open_database(path).query("SELECT event_id FROM policy_events"))
    assert rows == [{"event_id": again["event_id"]}]


def test_a_retried_event_is_stored_once(tmp_path):
    store = EventStore(tmp_path / "e.db")
    event = enforcement()
    store.write([event])
    store.write([event, enforcement()])
    store.close()
    assert open_database(tmp_path / "e.db")["policy_events"].count == 2


# --- history queries ------------------------------------------------------------------------


def test_pages_stay_exact_when_events_arrive_between_them(tmp_path):
    store = EventStore(tmp_path / "h.db")
    first = [enforcement() for _ in range(10)]
    store.write(first)
    db = open_database(tmp_path / "h.db")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": ["4"], **({"cursor": [cursor]} if cursor else {})}
        events, cursor = query_history(db, HistoryQuery.from_params(params))
        seen += [e["event_id"] for e in events]
        store.write([enforcement() for _ in range(3)])  # newer events keep arriving
        if cursor is None:
            break
    assert seen == [e["event_id"] for e in reversed(first)]


@pytest.mark.parametrize("params", [
    {"limit": ["-1"]}, {"since": ["2025-13-01T00:00:00Z"]}, {"policy_id": ["a", "b"]},
    {"cursor": ["c2VxOng"]}, {"event_type": ["Enforcement"]}, {"seq": ["1"]},
])
def test_malformed_history_parameters_are_refused(params):
    with pytest.raises(HistoryQueryError):
        HistoryQuery.from_params(params)


def test_times_are_normalised_to_utc():
    query = HistoryQuery.from_params({"since": ["2025-03-01T12:00:00+02:00"]})
    assert query.since == "2025-03-01T10:00:00.000Z"


# --- the command line -----------------------------------------------------------------------


def test_events_query_and_tail_read_the_database(tmp_path, capsys):
    config = tmp_path / "gateway.toml"
    config.write_text(f'[database]\npath = "{tmp_path / "cli.db"}"\n')
    store = EventStore(tmp_path / "cli.db")
    kept = enforcement(decision="refuse")
    store.write([enforcement(), kept, enforcement()])
    store.close()
    assert cli.main(["events", "query", "--config", str(config), "--decision", "refuse",
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [e["event_id"] for e in out["data"]] == [kept["event_id"]]
    assert out["next_cursor"] is None
    assert cli.main(["events", "tail", "--config", str(config), "-n", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and kept["event_id"] in lines[0]
    assert cli.main(["events", "query", "--config", str(config), "--limit", "0"]) == 2


def test_events_query_finds_the_event_of_one_request(tmp_path, capsys):
    config = tmp_path / "gateway.toml"
    config.write_text(f'[database]\npath = "{tmp_path / "cli.db"}"\n')
    store = EventStore(tmp_path / "cli.db")
    wanted = {**enforcement(), "request_id": "req-42"}
    store.write([{**enforcement(), "request_id": "req-41"}, wanted, enforcement()])
    store.close()
    assert cli.main(["events", "query", "--config", str(config), "--request-id", "req-42",
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(e["event_id"], e["request_id"]) for e in out["data"]] == [
        (wanted["event_id"], "req-42")]
    with sqlite3.connect(tmp_path / "cli.db") as conn:
        plan = conn.execute("EXPLAIN QUERY PLAN SELECT seq FROM policy_events "
                            "WHERE json_extract(extra, '$.request_id') = 'req-42'").fetchall()
    assert "idx_policy_events_request_id" in str(plan)  # a lookup, not a scan of every event
