"""`GET /api/policy-gateway/history`: admin only, filters, bad parameters, cursor pages."""

from __future__ import annotations

import threading

import pytest
from events_support import BOTH_BACKENDS, stored_events, wait_for

pytestmark = BOTH_BACKENDS

ORDER = "Where is my order?"


@pytest.fixture
def gw(make_events_gateway, mock):
    gateway = make_events_gateway(events={"batch_seconds": 0.01})
    for i in range(6):
        assert gateway.chat(ORDER, user=f"alice-{i % 2}").status_code == 200
    assert gateway.chat("Where is my order, idiot?", user="alice-0").status_code == 403
    assert gateway.chat("I want to speak to a human", user="bob",
                        project="proj_escalate").status_code == 200
    assert wait_for(lambda: len([e for e in stored_events(gateway)
                                 if e["event_type"] == "enforcement"]) == 8)
    return gateway


def test_only_the_admin_token_reads_history(gw):
    missing = gw.history(token=None)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_token"
    # The same admin check as every management route: an unknown credential is a 401.
    wrong = gw.history(token="not-the-admin-token")
    assert wrong.status_code == 401
    assert set(wrong.json()["error"]) == {"message", "type", "param", "code"}
    api_key = gw.history(token=gw.keys["proj_support"])
    assert api_key.status_code == 403


@pytest.mark.parametrize("params", [
    {"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"since": "yesterday"},
    {"until": "2025-01-01T00:00:00"}, {"cursor": "bm9wZQ"}, {"event_type": "audit"},
    {"colour": "blue"},
])
def test_bad_parameters_are_400(gw, params):
    response = gw.history(**params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_request"


def test_a_filter_with_control_characters_matches_only_what_was_stored(gw):
    for value in ("alice-0\x00", "\x00", "alice\u202e-0", "'; DROP TABLE policy_events; --"):
        response = gw.history(policy_user=value)
        assert response.status_code == 200, response.text
        assert response.json()["data"] == []
    assert len(gw.history(policy_user="alice-0").json()["data"]) == 4


def test_a_nul_character_in_a_request_neither_loses_its_event_nor_blocks_others(gw):
    hostile = gw.chat(ORDER, user="nul-sender", model="gpt-x\x00evil")
    assert hostile.status_code < 500, hostile.text
    assert gw.chat(ORDER, user="after-nul").status_code == 200
    assert wait_for(lambda: {"nul-sender", "after-nul"}
                    <= {e.get("policy_user") for e in stored_events(gw)})
    [event] = gw.history(policy_user="nul-sender").json()["data"]
    assert event["model"] in ("gpt-x\x00evil", "gpt-x\ufffdevil")  # PostgreSQL: replaced


def test_filters_select_exactly_the_matching_events(gw):
    everything = stored_events(gw)
    for name, value in [("policy_user", "alice-0"), ("project_id", "proj_escalate"),
                        ("decision", "refuse"), ("policy_id", "support_bot"),
                        ("event_type", "revision"), ("policy_target", "input")]:
        response = gw.history(**{name: value})
        assert response.status_code == 200, response.text
        got = [e["event_id"] for e in response.json()["data"]]
        expected = [e["event_id"] for e in reversed(everything) if e.get(name) == value]
        assert got == expected, name
        assert got or name == "policy_target", f"the fixture should produce {name}={value}"
    one = gw.chat(ORDER, user="carol")
    request_id = one.headers["x-request-id"]
    assert wait_for(lambda: gw.history(request_id=request_id).json()["data"] != [])
    [event] = gw.history(request_id=request_id).json()["data"]
    assert (event["request_id"], event["policy_user"]) == (request_id, "carol")
    combined = gw.history(policy_user="alice-0", decision="allow").json()["data"]
    assert len(combined) == 3 and all(e["policy_user"] == "alice-0" for e in combined)


def test_time_range_is_since_inclusive_until_exclusive(gw):
    enforcement = [e for e in stored_events(gw) if e["event_type"] == "enforcement"]
    pivot = enforcement[4]["created_at"]
    later = gw.history(event_type="enforcement", since=pivot).json()["data"]
    earlier = gw.history(event_type="enforcement", until=pivot).json()["data"]
    assert all(e["created_at"] >= pivot for e in later)
    assert all(e["created_at"] < pivot for e in earlier)
    assert len(later) + len(earlier) == len(enforcement)
    # The same instant in another zone selects the same events.
    shifted = pivot.replace("Z", "+00:00")
    assert gw.history(event_type="enforcement", since=shifted).json()["data"] == later


def test_pages_have_no_duplicates_and_no_gaps_while_events_arrive(gw):
    before = {e["event_id"] for e in stored_events(gw)}
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            gw.chat(ORDER, user="writer")

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        seen: list[str] = []
        page = gw.history(limit=3).json()
        while True:
            seen += [e["event_id"] for e in page["data"]]
            if page["next_cursor"] is None:
                break
            assert page["has_more"] is True
            page = gw.history(limit=3, cursor=page["next_cursor"]).json()
    finally:
        stop.set()
        thread.join()
    assert len(seen) == len(set(seen)), "an event appeared on two pages"
    assert before <= set(seen), "an event that existed before paging was skipped"
    stored = [e["event_id"] for e in stored_events(gw)]
    newest_seen = max(stored.index(s) for s in seen)
    assert seen == list(reversed(stored[:newest_seen + 1])), "pages are newest first, gapless"
