"""Every governed request leaves exactly one stored event whose fields match what the client was
told; events queued at shutdown are written; nothing stored contains prompt text or PII."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import httpx2
from events_support import EventsGateway, stored_events, wait_for

ORDER = "Where is my order?"


def user() -> str:
    return "u-" + uuid.uuid4().hex[:10]


def scenario(**fields: object) -> dict[str, str]:
    return {"x-mock-scenario": json.dumps(fields)}


def events_of(gw: EventsGateway, policy_user: str) -> list[dict]:
    return [e for e in stored_events(gw.db_path) if e.get("policy_user") == policy_user]


def one_event(gw: EventsGateway, policy_user: str) -> dict:
    assert wait_for(lambda: len(events_of(gw, policy_user)) >= 1), "no event was stored"
    found = events_of(gw, policy_user)
    assert len(found) == 1, found
    return found[0]


def test_each_outcome_leaves_exactly_one_matching_event(make_events_gateway, mock):
    gw = make_events_gateway()
    cases = {
        "allowed": dict(text=ORDER),
        "rewritten": dict(text="Is there a discount code for my order?"),
        "refused": dict(text="Where is my order, you idiot?"),
        "escalated": dict(text="I want to speak to a human about my order",
                          project="proj_escalate"),
        "upstream_5xx": dict(text=ORDER, headers=scenario(mode="status", status=503)),
    }
    answers = {}
    users = {}
    for name, case in cases.items():
        users[name] = user()
        text = case.pop("text")
        answers[name] = gw.chat(text, user=users[name], **case)
    expected = {"allowed": (200, "completed", "allow"), "rewritten": (200, "completed", "rewrite"),
                "refused": (403, "refused", "refuse"), "escalated": (200, "escalated", "escalate"),
                "upstream_5xx": (503, "upstream_error", "allow")}
    for name, (status, outcome, decision) in expected.items():
        response = answers[name]
        assert response.status_code == status, (name, response.text)
        told = response.json()["policy"]
        event = one_event(gw, users[name])
        assert (event["status"], event["outcome"]) == (status, outcome), name
        assert event["decision"] == told["decision"] == decision, name
        for key in ("effective_decision", "reason_code", "policy_id", "policy_revision",
                    "project_id", "rollout_mode", "enforced"):
            assert event[key] == told[key], (name, key)
        assert event["event_type"] == "enforcement" and event["source"] == "policy_gateway"
        uuid.UUID(event["event_id"])
        # The event names the request the client saw, to find its access log line.
        assert event["request_id"] == response.headers["x-request-id"], name


def test_stream_reset_and_client_disconnect_each_leave_one_event(make_events_gateway, mock):
    gw = make_events_gateway()
    reset_user, gone_user = user(), user()
    body = {"model": "gpt-x", "stream": True,
            "messages": [{"role": "user", "content": ORDER}]}
    headers = {"authorization": f"Bearer {gw.keys['proj_support']}"}
    response = httpx2.post(gw.url + "/policy/chat/completions", json=body, timeout=10,
                          headers={**headers, "x-policy-user": reset_user,
                                   **scenario(mode="reset_midstream", after_frames=2)})
    assert response.status_code == 200 and "upstream_unavailable" in response.text
    assert one_event(gw, reset_user)["outcome"] == "upstream_error"

    slow = scenario(mode="slow", delay=0.2, chunks=["a"] * 50)
    with httpx2.stream("POST", gw.url + "/policy/chat/completions", json=body, timeout=10,
                      headers={**headers, "x-policy-user": gone_user, **slow}) as streaming:
        next(streaming.iter_bytes())  # the first frame arrived: leave mid-stream
    assert mock.wait_for_disconnect(timeout=5)
    event = one_event(gw, gone_user)
    assert (event["outcome"], event["status"]) == ("client_disconnected", 499)


def test_events_queued_at_shutdown_are_all_written(make_events_gateway, mock):
    # A long batch window keeps the last events in the writer's hands when shutdown starts.
    gw = make_events_gateway(events={"batch_seconds": 30, "batch_size": 10_000})
    users = [user() for _ in range(40)]
    for name in users:
        assert gw.chat(ORDER, user=name).status_code == 200
    assert stored_events(gw.db_path) == [], "the batch window should still be open"
    accepted = [e["event_id"] for e in gw.state.event_sink.events]
    gw.stop()
    stored = stored_events(gw.db_path)
    assert Counter(e.get("policy_user") for e in stored if e["event_type"] == "enforcement") \
        == Counter(users)
    assert {e["event_id"] for e in stored} == set(accepted)
    assert gw.state.event_sink.dropped == 0 and gw.state.event_writer.lost == 0


def test_no_prompt_text_or_pii_value_is_ever_stored(make_events_gateway, mock):
    gw = make_events_gateway()
    email = "jane.doe.4711@example.org"
    phone = "+44 20 7946 0958"
    prompt = "Please update my zanzibar-walrus-delivery address and contact me"
    for project in ("proj_pii", "proj_support"):
        for stream in (False, True):
            response = gw.chat(f"{prompt} at {email} or {phone}", project=project,
                               user=user(), stream=stream)
            assert response.status_code == 200, response.text
    assert wait_for(lambda: len([e for e in stored_events(gw.db_path)
                                 if e["event_type"] == "enforcement"]) == 4)
    pii_events = [e for e in stored_events(gw.db_path) if e.get("project_id") == "proj_pii"]
    assert any(e["redacted_spans"] for e in pii_events), "the PII policy should have redacted"
    gw.stop()  # checkpoint: everything is in the main database file
    for path in gw.db_path.parent.glob("gateway.db*"):
        raw = path.read_bytes()
        for secret in (email, phone, "zanzibar-walrus"):
            assert secret.encode() not in raw, (secret, path.name)
