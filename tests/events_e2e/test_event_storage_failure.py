"""The event store failing during a burst (a locked SQLite file; PostgreSQL stopped): requests
keep succeeding, drops are counted, readiness says so, and the writer catches up afterwards."""

from __future__ import annotations

import sqlite3

import httpx2
from events_support import ADMIN_TOKEN, stored_events, wait_for

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def test_a_locked_database_drops_and_counts_then_the_writer_recovers(make_events_gateway, mock):
    gw = make_events_gateway(events={"queue_capacity": 10, "batch_size": 5, "busy_timeout": 0.05,
                                     "retry_initial": 0.02, "retry_max": 0.1})
    sink, writer = gw.state.event_sink, gw.state.event_writer
    assert gw.chat("Where is my order?", user="before").status_code == 200
    assert wait_for(lambda: any(e.get("policy_user") == "before"
                                for e in stored_events(gw.db_path)))
    locker = sqlite3.connect(str(gw.db_path), isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # holds the write lock: every write attempt fails
    try:
        statuses = [gw.chat("Where is my order?", user=f"burst-{i}").status_code
                    for i in range(40)]
        assert statuses == [200] * 40
        assert wait_for(lambda: writer.failures >= 2)
        assert sink.dropped > 0, "a 10-event queue cannot hold a 40-request burst"
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert wait_for(lambda: writer.held == 0), "the writer did not catch up after the lock"
    assert gw.chat("Where is my order?", user="after").status_code == 200
    assert wait_for(lambda: any(e.get("policy_user") == "after"
                                for e in stored_events(gw.db_path)))
    stored = [e for e in stored_events(gw.db_path) if e["event_type"] == "enforcement"]
    burst = [e for e in stored if e["policy_user"].startswith("burst-")]
    # Every event the queue accepted was written; exactly the dropped ones are missing.
    assert len(burst) == 40 - sink.dropped
    assert len({e["event_id"] for e in stored}) == len(stored)


def test_postgres_down_mid_load_queues_drops_reports_then_writes_the_backlog(
        postgres_server, postgres_url, make_events_gateway, mock):
    gw = make_events_gateway(
        database={"url": postgres_url, "connect_timeout": 1},
        events={"queue_capacity": 10, "batch_size": 5, "retry_initial": 0.02,
                "retry_max": 0.2})
    sink, writer = gw.state.event_sink, gw.state.event_writer
    assert gw.chat("Where is my order?", user="before").status_code == 200
    assert wait_for(lambda: any(e.get("policy_user") == "before" for e in stored_events(gw)))
    postgres_server.stop()  # at once, connections cut, as a crash
    try:
        statuses = [gw.chat("Where is my order?", user=f"burst-{i}").status_code
                    for i in range(40)]
        assert statuses == [200] * 40, "the request path never waits on PostgreSQL"
        assert wait_for(lambda: writer.failures >= 2)
        assert sink.dropped > 0, "a 10-event queue cannot hold a 40-request burst"
        ready = httpx2.get(gw.url + "/readyz", headers=ADMIN, timeout=10)
        assert ready.status_code == 200, "ready, degraded: requests are still served"
        body = ready.json()
        assert "events_not_written" in body["degraded"]
        assert body["events"]["dropped"] == sink.dropped and body["events"]["held"] > 0
        assert body["events"]["write_error"]
        history = gw.history()
        assert history.status_code == 503, history.text
        assert history.json()["error"]["code"] == "history_unavailable"
    finally:
        postgres_server.start()
    assert wait_for(lambda: writer.held == 0, timeout=30), "the backlog was not written"
    assert "events_not_written" not in httpx2.get(gw.url + "/readyz", timeout=10).json().get(
        "degraded", [])
    stored = [e for e in stored_events(gw) if e["event_type"] == "enforcement"]
    burst = [e for e in stored if e["policy_user"].startswith("burst-")]
    # Every event the queue accepted was written; exactly the dropped ones are missing.
    assert len(burst) == 40 - sink.dropped
    assert len({e["event_id"] for e in stored}) == len(stored)
    assert gw.history(policy_user="burst-0").status_code == 200
