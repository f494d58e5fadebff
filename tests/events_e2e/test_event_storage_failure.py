"""A locked database during a burst: requests keep succeeding, drops are counted, and the writer
catches up once the lock is gone."""

from __future__ import annotations

import sqlite3

from events_support import stored_events, wait_for


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
