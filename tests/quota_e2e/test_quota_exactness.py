"""Quotas hold exactly across 2 worker processes sharing one database (docs/quotas.md)."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest
import trio

from gateway.quota.limits import retry_after_seconds

from .conftest import CONFIGURED_PROJECT, Workers

SLOW = {"x-mock-scenario": json.dumps({"mode": "slow", "delay": 0.3})}


def chat(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


async def burst(workers: Workers, key: str, count: int, *, headers: dict[str, str] | None = None,
                body: dict[str, Any] | None = None) -> list[httpx2.Response]:
    """`count` requests released at once, each on its own connection."""
    responses: list[httpx2.Response] = []
    limits = httpx2.Limits(max_connections=count + 1, max_keepalive_connections=0)
    async with httpx2.AsyncClient(base_url=workers.url, timeout=60, limits=limits) as client:
        async def one() -> None:
            responses.append(await client.post(
                "/policy/chat/completions", json=body or chat(),
                headers={"authorization": f"Bearer {key}", **(headers or {})}))

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
    return responses


def test_the_gateway_runs_two_worker_processes(workers: Workers) -> None:
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(workers.process.pid)],
                              capture_output=True, text=True, check=True).stdout.split()
    assert len(children) >= 2


@pytest.mark.parametrize(("limit", "extra", "slow"), [
    (10, 6, False), (10, 6, True), (7, 13, False), (7, 13, True), (25, 5, False)])
async def test_n_plus_k_concurrent_requests_admit_exactly_n(
        workers: Workers, limit: int, extra: int, slow: bool) -> None:
    project_id, key = workers.project(budget={"requests": {"daily": limit}})
    responses = await burst(workers, key, limit + extra, headers=SLOW if slow else None)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * limit + [429] * extra
    assert workers.settled(project_id)[("project", project_id, "requests")] == limit


async def test_user_quota_is_exact_per_subject(workers: Workers) -> None:
    project_id, key = workers.project(user_quota={"requests": {"daily": 3}})
    alice = await burst(workers, key, 8, headers={"x-policy-user": "alice", **SLOW})
    bob = await burst(workers, key, 5, headers={"x-policy-user": "bob"})
    assert sorted(r.status_code for r in alice) == [200] * 3 + [429] * 5
    assert sorted(r.status_code for r in bob) == [200] * 3 + [429] * 2
    refused = next(r for r in alice if r.status_code == 429).json()
    assert refused["policy"]["reason_code"] == "USER_QUOTA_EXCEEDED"
    counters = workers.settled(project_id)
    assert counters[("user", "alice", "requests")] == 3
    assert counters[("user", "bob", "requests")] == 3


@pytest.mark.parametrize("slow", [False, True])
async def test_token_limit_overruns_by_at_most_one_request(workers: Workers,
                                                           slow: bool) -> None:
    """Each answer uses 20 tokens (1 in, 19 out), within its estimate (input + max_tokens 20):
    the settled total stays under the limit plus one request's usage."""
    limit = 200
    project_id, key = workers.project(budget={"tokens": {"daily": limit}})
    scenario: dict[str, Any] = {"usage": {"input_tokens": 1, "output_tokens": 19}}
    if slow:
        scenario.update(mode="slow", delay=0.2)
    responses = await burst(workers, key, 30, body=chat(max_tokens=20),
                            headers={"x-mock-scenario": json.dumps(scenario)})
    ok = [r for r in responses if r.status_code == 200]
    assert {r.status_code for r in responses} == {200, 429}
    reported = sum(r.json()["usage"]["total_tokens"] for r in ok)
    settled = workers.settled(project_id)[("project", project_id, "tokens")]
    assert settled == reported
    assert limit - 20 < settled < limit + 20


async def test_quota_refusal_answer(workers: Workers) -> None:
    project_id, key = workers.project(budget={"requests": {"daily": 1}})
    async with httpx2.AsyncClient(base_url=workers.url, timeout=30) as client:
        headers = {"authorization": f"Bearer {key}"}
        first = await client.post("/policy/chat/completions", json=chat(), headers=headers)
        before = retry_after_seconds("daily", datetime.now(UTC))
        refused = await client.post("/policy/chat/completions", json=chat(), headers=headers)
        after = retry_after_seconds("daily", datetime.now(UTC))
        messages = await client.post("/policy/messages", headers=headers, json={
            "model": "claude-3-5-haiku-latest", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}]})
        responses = await client.post("/policy/responses", headers=headers,
                                      json={"model": "gpt-4o-mini", "input": "hi"})
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "1"
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    assert first.json()["policy"]["quota"]["project"][0]["remaining"] == 0
    assert refused.status_code == 429
    assert after <= int(refused.headers["retry-after"]) <= before
    body = refused.json()
    assert body["error"]["code"] == "quota_exceeded"
    assert body["error"]["type"] == "rate_limit_error"
    policy = body["policy"]
    assert (policy["decision"], policy["effective_decision"], policy["enforced"]) == (
        "refuse", "refuse", True)
    assert policy["reason_code"] == "PROJECT_QUOTA_EXCEEDED"
    assert policy["project_id"] == project_id
    assert messages.status_code == 429
    assert messages.json()["type"] == "error"
    assert messages.json()["error"]["type"] == "rate_limit_error"
    assert messages.json()["policy"]["reason_code"] == "PROJECT_QUOTA_EXCEEDED"
    assert responses.status_code == 429 and responses.json()["error"]["code"] == "quota_exceeded"
    reset = refused.headers["x-ratelimit-reset-requests"]
    assert reset.endswith("T00:00:00Z")
    assert workers.settled(project_id)[("project", project_id, "requests")] == 1


async def test_policy_declared_quotas_apply_even_in_shadow(workers: Workers) -> None:
    project_id, key = workers.project(policy="quota_declared",
                                      user_quota={"requests": {"daily": 5}})
    responses = await burst(workers, key, 4, headers={"x-policy-user": "carol"})
    assert sorted(r.status_code for r in responses) == [200, 200, 429, 429]
    refused = next(r for r in responses if r.status_code == 429).json()["policy"]
    assert refused["rollout_mode"] == "shadow" and refused["enforced"] is True
    assert refused["reason_code"] == "USER_QUOTA_EXCEEDED"
    counters = workers.settled(project_id)
    assert counters[("user", "carol", "requests")] == 2
    assert counters[("project", project_id, "requests")] == 2


async def test_ratelimit_headers_on_policy_refusals_too(workers: Workers) -> None:
    project_id, key = workers.project(budget={"requests": {"daily": 50},
                                              "tokens": {"daily": 100000}})
    async with httpx2.AsyncClient(base_url=workers.url, timeout=30) as client:
        refused = await client.post("/policy/chat/completions", json=chat("you idiot"),
                                    headers={"authorization": f"Bearer {key}"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "policy_refused"
    assert refused.headers["x-ratelimit-limit-requests"] == "50"
    assert refused.headers["x-ratelimit-remaining-requests"] == "49"
    assert refused.headers["x-ratelimit-limit-tokens"] == "100000"
    # A refused request never reached the upstream: its reservation is given back.
    assert workers.settled(project_id) == {("project", project_id, "requests"): 0,
                                           ("project", project_id, "tokens"): 0}


@pytest.mark.parametrize("subject", ["", "用户😀", "x" * 256, "a'; DROP TABLE quota_counters"])
async def test_hostile_policy_users(workers: Workers, subject: str) -> None:
    project_id, key = workers.project(user_quota={"requests": {"daily": 1}})
    body = chat(policy_user=subject)
    first = await burst(workers, key, 1, body=body)
    second = await burst(workers, key, 1, body=body)
    assert first[0].status_code == 200
    assert second[0].status_code == 429
    other = await burst(workers, key, 1, headers={"x-policy-user": "someone-else"})
    assert other[0].status_code == 200
    counters = workers.settled(project_id)
    assert sum(used for (kind, _, _), used in counters.items() if kind == "user") == 2


async def test_overlong_policy_user_is_refused_before_admission(workers: Workers) -> None:
    project_id, key = workers.project(user_quota={"requests": {"daily": 1}})
    response = (await burst(workers, key, 1, body=chat(policy_user="x" * 5000)))[0]
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "policy_user"
    assert workers.settled(project_id) == {}


def test_usage_command_shows_project_and_top_users(workers: Workers) -> None:
    project_id, key = workers.project(budget={"requests": {"daily": 100}},
                                      user_quota={"requests": {"daily": 10}})
    for user, count in (("dave", 3), ("erin", 1)):
        for _ in range(count):
            response = httpx2.post(workers.url + "/policy/chat/completions", json=chat(),
                                  headers={"authorization": f"Bearer {key}",
                                           "x-policy-user": user}, timeout=30)
            assert response.status_code == 200
    workers.settled(project_id)
    report = workers.cli("usage", project_id, "--json")
    assert report["project"] == [{"unit": "requests", "window": "daily", "used": 4,
                                  "limit": 100, "reset_at": report["project"][0]["reset_at"]}]
    assert [u["quota_subject"] for u in report["users"]] == ["dave", "erin"]
    assert report["users"][0]["counters"][0]["used"] == 3
    assert report["users"][0]["counters"][0]["limit"] == 10


async def test_configured_project_quota_applies_and_the_tightest_wins(workers: Workers) -> None:
    # The configuration allows 2 requests a day for this project; its own budget allows 5.
    project_id, key = workers.project(project_id=CONFIGURED_PROJECT,
                                      budget={"requests": {"daily": 5}})
    responses = await burst(workers, key, 4)
    assert sorted(r.status_code for r in responses) == [200, 200, 429, 429]
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["policy"]["reason_code"] == "PROJECT_QUOTA_EXCEEDED"
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    assert workers.settled(project_id)[("project", project_id, "requests")] == 2
