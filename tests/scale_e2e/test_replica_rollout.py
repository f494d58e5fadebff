"""Rollout across three replicas sharing one Redis: a canary user gets the same decision on
every replica, and a spike spread across replicas (too small on any one of them) trips one
auto-rollback that every replica follows within a second."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import httpx2
import pytest
import trio
from mock_upstream import MockUpstream

from .conftest import Replicas

pytestmark = pytest.mark.slow

#: How long a rollback may take to be stored and followed by every replica before the test
#: fails: each replica syncs every 250 ms, but a loaded CI machine stretches that.
FOLLOW_SECONDS = 15.0


def banned() -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "forbidden"}]}


async def ask(client: httpx2.AsyncClient, url: str, key: str, user: str) -> dict[str, Any]:
    answer = await client.post(f"{url}/policy/chat/completions", json=banned(),
                               headers={"authorization": f"Bearer {key}", "x-policy-user": user})
    assert answer.status_code in (200, 403), answer.text
    policy: dict[str, Any] = answer.json()["policy"]
    return policy


async def test_a_canary_user_gets_one_decision_on_every_replica(
        redis_up: Replicas, mock: MockUpstream) -> None:
    _, key = redis_up.project(policy="canary_sticky")
    seen: dict[str, set[tuple[str, bool, str]]] = {}
    async with httpx2.AsyncClient(timeout=30) as client:
        for number in range(16):
            user = f"user-{number}"
            for url in redis_up.urls:
                policy = await ask(client, url, key, user)
                seen.setdefault(user, set()).add(
                    (policy["rollout_mode"], policy["enforced"], policy["effective_decision"]))
    assert all(len(decisions) == 1 for decisions in seen.values()), seen
    enforced = [user for user, decisions in seen.items() if next(iter(decisions))[1]]
    assert 0 < len(enforced) < 16  # sampled: some users in the canary, some not


async def test_a_spike_across_replicas_trips_one_rollback(redis_up: Replicas,
                                                          mock: MockUpstream) -> None:
    replicas = redis_up
    _, key = replicas.project(policy="rollback_shared")
    # 12 refusals, 4 per replica: no replica alone reaches min_requests 12.
    async with httpx2.AsyncClient(timeout=30) as client:
        refusals = [await ask(client, url, key, f"s{index}")
                    for index, url in enumerate(replicas.urls * 4)]
        assert all(p["rollout_mode"] == "enforced" and p["effective_decision"] == "refuse"
                   for p in refusals[:11])
        # The rollback trips in Redis once the replica that saw the 12th refusal syncs; from
        # then on its window is fixed, so asking more cannot change it. Every replica follows
        # at its next sync: each syncs every 250 ms, which a loaded machine stretches.
        with trio.fail_after(FOLLOW_SECONDS):
            while True:
                if replicas.redis.command("KEYS", "*{rollback_shared:*}:rb"):
                    break
                await trio.sleep(0.05)
            for url in replicas.urls:
                while True:
                    if (await ask(client, url, key, "later"))["rollout_mode"] == "rollback":
                        break
                    await trio.sleep(0.05)
        after = [await ask(client, url, key, "later") for url in replicas.urls]
    assert [p["rollout_mode"] for p in after] == ["rollback"] * 3
    assert all(p["enforced"] is False and p["effective_decision"] == "allow" for p in after)
    rollbacks = wait_for_revision_events(replicas, "rollback_shared", "auto_rollback")
    assert len(rollbacks) == 1  # one rollback, announced by the replica that tripped it
    assert rollbacks[0]["window"] == {"share_pct": 100.0, "matching": 12, "total": 12}


def wait_for_revision_events(replicas: Replicas, policy_id: str, edit_type: str
                             ) -> list[dict[str, Any]]:
    deadline = time.monotonic() + FOLLOW_SECONDS
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = []
        for member in replicas.members:
            with sqlite3.connect(member.db_path, timeout=30) as conn:
                rows = conn.execute(
                    "SELECT extra FROM policy_events WHERE event_type = 'revision' "
                    "AND policy_id = ? AND edit_type = ?", (policy_id, edit_type)).fetchall()
            found += [json.loads(raw or "{}") for (raw,) in rows]
        if found:
            time.sleep(0.5)  # a second announcement would have arrived by now
            return found
        time.sleep(0.1)
    return found
