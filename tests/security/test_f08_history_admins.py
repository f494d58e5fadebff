"""History refused JWT admins (its own `require_admin`, its own error code). Now it
uses the management API's one admin check: JWT admins read their own account's events."""

from __future__ import annotations

import time

import httpx2

from .conftest import PREFIX


def _history(secure, credential):
    return httpx2.get(secure.url + PREFIX + "/history", timeout=10,
                     headers={"authorization": f"Bearer {credential}"})


def test_history_answers_jwt_admins_with_their_own_accounts_events(secure):
    assert secure.chat("hello").status_code == 200
    assert secure.chat("hello", key=secure.keys["b"]).status_code == 200
    deadline = time.monotonic() + 10
    while secure.state.event_writer.held and time.monotonic() < deadline:
        time.sleep(0.05)
    everything = _history(secure, "security-admin-" + "t" * 24).json()["data"]
    assert {e["org_id"] for e in everything} >= {secure.account_a, secure.account_b}
    for account in (secure.account_a, secure.account_b):
        answer = _history(secure, secure.token("boss", account, ["admin"]))
        assert answer.status_code == 200, answer.text
        events = answer.json()["data"]
        assert events and {e["org_id"] for e in events} == {account}
    # Same refusals as every other management route.
    viewer = _history(secure, secure.token("viewer", secure.account_a, ["viewer"]))
    assert (viewer.status_code, viewer.json()["error"]["code"]) == (403, "admin_required")
    key = _history(secure, secure.keys["a"])
    assert (key.status_code, key.json()["error"]["code"]) == (403, "admin_required")
