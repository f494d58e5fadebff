"""Quotas stay exact across three replicas sharing one Redis (docs/scale-out.md).

N+k concurrent requests spread over the replicas admit exactly N, for requests and tokens, for
the project and for a user, five rounds each with a slow upstream every other round; settled
tokens equal what the upstream reported; Redis killed mid-load fails closed (503, nothing
over-admitted, no 500, recorded in events) and counting resumes when it returns.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import httpx2
import pytest
import trio
from mock_upstream import MockUpstream

from .conftest import Replicas, wait_for_events

pytestmark = pytest.mark.slow

USAGE = {"input_tokens": 1, "output_tokens": 19}  # 20 tokens per answer
ROUNDS = 5


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 20, **extra}


def scenario(slow: float = 0.0) -> dict[str, str]:
    value: dict[str, Any] = {"usage": USAGE}
    if slow:
        value.update(mode="slow", delay=slow)
    return {"x-mock-scenario": json.dumps(value)}


async def burst(urls: list[str], key: str, count: int, *, headers: dict[str, str] | None = None
                ) -> list[httpx2.Response]:
    """`count` requests released at once, each on its own connection, round-robin over the
    replicas."""
    responses: list[httpx2.Response] = []
    limits = httpx2.Limits(max_connections=count + 1, max_keepalive_connections=0)
    async with httpx2.AsyncClient(timeout=60, limits=limits) as client:
        async def one(url: str) -> None:
            responses.append(await client.post(
                f"{url}/policy/chat/completions", json=chat(),
                headers={"authorization": f"Bearer {key}", **(headers or {})}))

        async with trio.open_nursery() as nursery:
            for _, url in zip(range(count), itertools.cycle(urls), strict=False):
                nursery.start_soon(one, url)
    return responses


_estimate: list[int] = []


async def token_estimate(replicas: Replicas) -> int:
    """Tokens the gateway reserves for `chat()`: its input estimate plus max_tokens."""
    if not _estimate:
        _, key = replicas.project(budget={"tokens": {"daily": 1_000_000}})
        [answer] = await burst(replicas.urls[:1], key, 1, headers=scenario())
        _estimate.append(1_000_000 - int(answer.headers["x-ratelimit-remaining-tokens"]))
    return _estimate[0]


@pytest.mark.parametrize("unit", ["requests", "tokens"])
@pytest.mark.parametrize("scope", ["project", "user"])
async def test_n_plus_k_across_three_replicas_admit_exactly_n(
        redis_up: Replicas, mock: MockUpstream, scope: str, unit: str) -> None:
    replicas = redis_up
    estimate = await token_estimate(replicas)
    for round_number in range(ROUNDS):
        admit = 4 + round_number  # N
        extra = 3 + 2 * round_number  # k
        # A token limit that N estimates reach and N - 1 do not.
        limit = admit if unit == "requests" else (admit - 1) * estimate + estimate // 2
        quota = {unit: {"daily": limit}}
        project_id, key = replicas.project(
            **({"budget": quota} if scope == "project" else {"user_quota": quota}))
        # A settled token reservation gives back what the answer did not use, which rightly
        # lets a later request in: for tokens, every answer of the burst is held upstream
        # until all were admitted, or a loaded machine that staggers the burst admits more.
        slow = 1.5 if unit == "tokens" else 0.3 if round_number % 2 else 0.0
        headers = {**scenario(slow=slow), "x-policy-user": "alice"}
        responses = await burst(replicas.urls, key, admit + extra, headers=headers)
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * admit + [429] * extra, (scope, unit, round_number)
        reason = "PROJECT" if scope == "project" else "USER"
        assert {r.json()["policy"]["reason_code"] for r in responses
                if r.status_code == 429} == {f"{reason}_QUOTA_EXCEEDED"}
        replicas.settled(project_id)
        subject = project_id if scope == "project" else "alice"
        reported = sum(r.json()["usage"]["total_tokens"] for r in responses
                       if r.status_code == 200)
        expected = admit if unit == "requests" else reported
        assert replicas.counter(project_id, scope, unit, subject) == expected
    if unit == "tokens":
        assert reported == admit * 20  # what the upstream reported, summed across replicas
    assert math.isfinite(estimate)


async def test_every_replica_reads_one_counter(redis_up: Replicas, mock: MockUpstream) -> None:
    """Requests one after another, each to the next replica: the remaining count goes down by
    one each time, whichever replica answers."""
    replicas = redis_up
    project_id, key = replicas.project(budget={"requests": {"daily": 6}})
    remaining = []
    async with httpx2.AsyncClient(timeout=30) as client:
        for url in replicas.urls * 2:
            answer = await client.post(f"{url}/policy/chat/completions", json=chat(),
                                       headers={"authorization": f"Bearer {key}",
                                                **scenario()})
            remaining.append(int(answer.headers["x-ratelimit-remaining-requests"]))
    assert remaining == [5, 4, 3, 2, 1, 0]
    replicas.settled(project_id)
    report = replicas.members[2].cli("usage", project_id)  # the CLI reads Redis too
    assert [(c["unit"], c["used"]) for c in report["project"]] == [("requests", 6)]


@pytest.mark.parametrize("stream", [False, True])
async def test_the_next_request_on_another_replica_sees_the_previous_usage(
        redis_up: Replicas, stream: bool) -> None:
    """Settlement in Redis completes before the answer ends: a client that sends its next
    request the moment an answer ended, to the next replica, sees that request's real usage
    (20 tokens) in `x-ratelimit-remaining-tokens`, not its estimate."""
    _, key = redis_up.project(budget={"requests": {"daily": 1000}, "tokens": {"daily": 10**6}})
    remaining = []
    async with httpx2.AsyncClient(timeout=30) as client:
        for url in itertools.islice(itertools.cycle(redis_up.urls), 12):
            async with client.stream(
                    "POST", f"{url}/policy/chat/completions", json=chat(stream=stream, max_tokens=500),
                    headers={"authorization": f"Bearer {key}", **scenario()}) as answer:
                body = await answer.aread()  # to the end of the answer; then the next at once
                assert answer.status_code == 200, body
            remaining.append(int(answer.headers["x-ratelimit-remaining-tokens"]))
    # Each answer counts its own estimate and every earlier request's 20 tokens: an unsettled
    # predecessor would still hold its larger estimate.
    assert [before - after for before, after in itertools.pairwise(remaining)] == [20] * 11


async def test_redis_killed_mid_load_fails_closed_then_counting_resumes(
        redis_up: Replicas, mock: MockUpstream) -> None:
    replicas = redis_up
    project_id, key = replicas.project(budget={"requests": {"daily": 30}})
    in_flight: list[httpx2.Response] = []
    refused: list[httpx2.Response] = []
    async with trio.open_nursery() as nursery:
        async def slow_wave() -> None:
            in_flight.extend(await burst(replicas.urls, key, 9, headers=scenario(slow=1.0)))

        nursery.start_soon(slow_wave)
        # all 9 admitted and at the upstream
        assert await trio.to_thread.run_sync(mock.wait_for_requests, 9, 10.0)
        replicas.redis.stop()  # SIGKILL while they are in flight
        refused.extend(await burst(replicas.urls, key, 9, headers=scenario()))
    assert [r.status_code for r in in_flight] == [200] * 9
    assert [r.status_code for r in refused] == [503] * 9
    body = refused[0].json()
    assert body["error"]["code"] == "quota_unavailable"
    assert body["policy"]["reason_code"] == "QUOTA_UNAVAILABLE"
    assert refused[0].headers["retry-after"] == "1"
    async with httpx2.AsyncClient(timeout=10) as client:
        for url in replicas.urls:
            ready = await client.get(f"{url}/readyz")
            assert ready.status_code == 503 and "redis" in " ".join(ready.json()["reasons"])

    replicas.redis.start()  # the append-only file gives back the 9 counted requests
    for url in replicas.urls:
        await until_ready(url)
    after = await burst(replicas.urls, key, 30, headers=scenario())
    assert sorted(r.status_code for r in after) == [200] * 21 + [429] * 9
    events = wait_for_events(replicas, project_id, 48)
    outcomes = sorted(e["outcome"] for e in events)
    assert outcomes == sorted(["completed"] * 30 + ["quota_unavailable"] * 9
                              + ["quota_exceeded"] * 9)
    assert all(e["status"] == 503 for e in events if e["outcome"] == "quota_unavailable")


async def until_ready(url: str) -> None:
    async with httpx2.AsyncClient(timeout=10) as client:
        with trio.fail_after(10):
            for _ in itertools.count():
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
                await trio.sleep(0.05)
