"""Every event class reaches the database with every field docs/events.md lists: simulations from
both simulate endpoints, revisions from policy create/update/delete and from auto-rollback start and
end, and the enforcement event of a quota 429."""

from __future__ import annotations

import uuid
from datetime import datetime

import httpx2
from events_support import ADMIN_TOKEN, EventsGateway, stored_events, wait_for

from gateway.db import open_database
from gateway.events.sink import EVENT_FIELDS
from gateway.identity.projects import ProjectStore

ADMIN = "/api/policy-gateway"
SECRET = "zebra-quartz-4471"  # a prompt word that must never be stored

TRIP_POLICY = '''policy v1 "trip_guard" {
  name "Trip guard"
  classification "confidential"
  default allow
  denylist banned = ["WORD"]
  rule banned_words {
    when input contains any of banned
    then refuse reason BANNED
  }
  rollout {
    otherwise enforced
    auto_rollback {
      enabled true
      threshold_pct 50
      min_requests 4
      window_minutes 1
      cooldown_minutes 30
      rollback_decisions refuse
    }
  }
}
'''


def admin(gw: EventsGateway) -> httpx2.Client:
    return httpx2.Client(base_url=gw.url + ADMIN, timeout=10,
                        headers={"authorization": f"Bearer {ADMIN_TOKEN}"})


def assert_complete(event: dict) -> None:
    """Every documented field of the event's class is present; the common ones are well formed."""
    missing = set(EVENT_FIELDS[event["event_type"]]) - set(event)
    assert not missing, (event["event_type"], missing)
    uuid.UUID(event["event_id"])
    assert event["source"] == "policy_gateway"
    assert event["created_at"].endswith("Z")
    datetime.fromisoformat(event["created_at"])


def stored_of(gw: EventsGateway, event_type: str) -> list[dict]:
    return [e for e in stored_events(gw.db_path) if e["event_type"] == event_type]


def test_both_simulate_endpoints_store_a_complete_simulation_event(make_events_gateway, mock):
    gw = make_events_gateway(events={"batch_seconds": 0.01})
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": f"Tell me a {SECRET} joke"}]}
    public = httpx2.post(gw.url + "/policy/simulate", json=body, timeout=10, headers={
        "authorization": f"Bearer {gw.keys['proj_support']}", "x-policy-user": "sim-public"})
    assert public.status_code == 200, public.text
    with admin(gw) as client:
        managed = client.post("/simulate", json={**body, "project_id": "proj_pii",
                                                 "policy_user": "sim-admin"})
    assert managed.status_code == 200, managed.text
    assert wait_for(lambda: len(stored_of(gw, "simulation")) == 2)
    by_user = {e["policy_user"]: e for e in stored_of(gw, "simulation")}
    for user, answer, project in (("sim-public", public, "proj_support"),
                                  ("sim-admin", managed, "proj_pii")):
        event, told = by_user[user], answer.json()["policy"]
        assert_complete(event)
        assert (event["project_id"], event["org_id"]) == (project, gw.gateway.account.id)
        for key in ("decision", "effective_decision", "reason_code", "policy_id",
                    "policy_revision", "rollout_mode", "enforced"):
            assert event[key] == told[key], (user, key)
        assert event["status"] == 200 and event["surface"] == "chat.completions"
        assert isinstance(event["scenario_categories"], list)
    assert by_user["sim-public"]["decision"] == "refuse", "support_bot refuses jokes"
    assert not stored_of(gw, "enforcement"), "a simulation is not a governed request"
    assert SECRET not in str(stored_events(gw.db_path))


def test_policy_create_update_delete_store_complete_revision_events(make_events_gateway, mock):
    gw = make_events_gateway(events={"batch_seconds": 0.01})
    # The policies the gateway started with were each recorded as a first revision.
    loaded_at_start = len(gw.state.registry.policies)
    assert wait_for(lambda: len(stored_of(gw, "revision")) == loaded_at_start)
    created, updated = TRIP_POLICY.replace("WORD", "apple"), TRIP_POLICY.replace("WORD", "pear")
    with admin(gw) as client:
        assert client.post("/policies", json={"source": created}).status_code == 201
        assert client.put("/policies/trip_guard", json={"source": updated}).status_code == 200
        assert client.delete("/policies/trip_guard").status_code == 200
    assert wait_for(lambda: len(stored_of(gw, "revision")) == loaded_at_start + 3)
    changes = [e for e in stored_of(gw, "revision") if e["policy_id"] == "trip_guard"]
    assert [(e["edit_type"], e["policy_revision"]) for e in changes] == [
        ("create", 1), ("update", 2), ("delete", 3)]
    assert [e["config_snapshot"] for e in changes] == [created, updated, updated]
    for event in changes:
        assert_complete(event)
        assert (event["policy_name"], event["data_classification"]) == (
            "Trip guard", "confidential")
    for event in stored_of(gw, "revision"):
        assert_complete(event)


def test_auto_rollback_start_and_end_are_stored_revision_events(make_events_gateway, mock):
    gw = make_events_gateway(events={"batch_seconds": 0.01})
    with admin(gw) as client:
        assert client.post("/policies", json={
            "source": TRIP_POLICY.replace("WORD", "banana")}).status_code == 201
    projects = ProjectStore(open_database(gw.db_path))
    try:
        projects.create("proj_trip", account_id=gw.gateway.account.id, name="Trip",
                        policy_id="trip_guard")
    finally:
        projects.db.conn.close()
    gw.keys["proj_trip"] = gw.gateway.store.create_key(gw.gateway.account.id,
                                                       project_id="proj_trip")[1]
    modes = []
    for i in range(5):
        response = gw.chat("I want a banana", project="proj_trip", user=f"trip-{i}")
        modes.append((response.status_code, response.json()["policy"]["rollout_mode"]))
    # Four refusals out of four trip the rollback: from then on nothing is enforced.
    assert modes == [(403, "enforced")] * 3 + [(200, "rollback")] * 2
    with admin(gw) as client:  # a new revision ends the rollback of the old one
        assert client.put("/policies/trip_guard", json={
            "source": TRIP_POLICY.replace("WORD", "cherry")}).status_code == 200
    assert gw.chat("I want a banana", project="proj_trip", user="trip-after").status_code == 200

    def rollbacks() -> list[dict]:
        return [e for e in stored_of(gw, "revision")
                if e["edit_type"] in ("auto_rollback", "rollback_end")]

    assert wait_for(lambda: len(rollbacks()) == 2)
    start, end = rollbacks()
    assert (start["edit_type"], end["edit_type"]) == ("auto_rollback", "rollback_end")
    for event in (start, end):
        assert_complete(event)
        assert (event["policy_id"], event["policy_revision"]) == ("trip_guard", 1)
        assert event["config_snapshot"] == TRIP_POLICY.replace("WORD", "banana")
    assert start["window"]["total"] == 4 and start["window"]["matching"] == 4
    assert end["reason"] == "revision_replaced"
    trip_events = [e for e in stored_of(gw, "enforcement") if e["project_id"] == "proj_trip"]
    assert len(trip_events) == 6


def test_a_quota_429_stores_one_event_matching_what_the_client_was_told(
        make_events_gateway, mock):
    gw = make_events_gateway(events={"batch_seconds": 0.01})
    projects = ProjectStore(open_database(gw.db_path))
    try:
        projects.create("proj_quota", account_id=gw.gateway.account.id, name="Quota",
                        policy_id="support_bot", user_quota={"requests": {"daily": 1}})
    finally:
        projects.db.conn.close()
    gw.keys["proj_quota"] = gw.gateway.store.create_key(gw.gateway.account.id,
                                                        project_id="proj_quota")[1]
    assert gw.chat("Where is my order?", project="proj_quota", user="q1").status_code == 200
    refused = gw.chat("Where is my order?", project="proj_quota", user="q1")
    assert refused.status_code == 429, refused.text
    told = refused.json()["policy"]
    assert wait_for(lambda: len([e for e in stored_of(gw, "enforcement")
                                 if e["policy_user"] == "q1"]) == 2)
    first, event = [e for e in stored_of(gw, "enforcement") if e["policy_user"] == "q1"]
    assert first["outcome"] == "completed"
    assert_complete(event)
    assert (event["status"], event["outcome"]) == (429, "quota_exceeded")
    for key in ("decision", "effective_decision", "reason_code", "enforced", "project_id",
                "policy_id", "policy_user"):
        assert event[key] == told[key], key
    assert event["reason_code"] == "USER_QUOTA_EXCEEDED"
    assert event["usage"] == {"input_tokens": 0, "output_tokens": 0}
