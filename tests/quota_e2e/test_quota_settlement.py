"""Settlement: the counters hold the upstream's reported usage, on every API, streamed or not;
upstream failures give the reservation back, and a client that leaves is charged its input
(docs/quotas.md)."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
import trio

from .conftest import Workers

USAGE = {"input_tokens": 11, "output_tokens": 7}
REPORTED = {"x-mock-scenario": json.dumps({"usage": USAGE})}
BUDGET = {"requests": {"daily": 1000}, "tokens": {"daily": 1_000_000}}

REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/policy/chat/completions",
             {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}),
    "messages": ("/policy/messages",
                 {"model": "claude-3-5-haiku-latest", "max_tokens": 50,
                  "messages": [{"role": "user", "content": "hello"}]}),
    "responses": ("/policy/responses", {"model": "gpt-4o-mini", "input": "hello"}),
}


def tokens_and_requests(workers: Workers, project_id: str) -> tuple[int, int]:
    counters = workers.settled(project_id)
    return (counters[("project", project_id, "tokens")],
            counters[("project", project_id, "requests")])


@pytest.mark.parametrize("api", sorted(REQUESTS))
@pytest.mark.parametrize("stream", [False, True])
def test_settled_tokens_equal_reported_usage(workers: Workers, api: str, stream: bool) -> None:
    project_id, key = workers.project(budget=BUDGET)
    path, body = REQUESTS[api]
    for _ in range(3):
        response = httpx2.post(workers.url + path, json={**body, "stream": stream}, timeout=30,
                              headers={"authorization": f"Bearer {key}", **REPORTED})
        assert response.status_code == 200, response.text
        assert response.headers["x-ratelimit-limit-tokens"] == "1000000"
    assert tokens_and_requests(workers, project_id) == (3 * 18, 3)


@pytest.mark.parametrize("client_asks", [False, True])
def test_chat_stream_usage_with_and_without_the_client_asking(workers: Workers,
                                                              client_asks: bool) -> None:
    project_id, key = workers.project(budget=BUDGET)
    path, body = REQUESTS["chat"]
    extra = {"stream_options": {"include_usage": True}} if client_asks else {}
    response = httpx2.post(workers.url + path, json={**body, "stream": True, **extra},
                          timeout=30, headers={"authorization": f"Bearer {key}", **REPORTED})
    frames = [json.loads(line[6:]) for line in response.text.splitlines()
              if line.startswith("data: {")]
    usage_frames = [(u["prompt_tokens"], u["completion_tokens"])
                    for f in frames if (u := f.get("usage"))]
    assert usage_frames == ([(11, 7)] if client_asks else [])
    assert tokens_and_requests(workers, project_id) == (18, 1)


@pytest.mark.parametrize("scenario", [
    {"mode": "status", "status": 500},
    {"mode": "status", "status": 429},
    {"mode": "reset_midstream"},
    {"mode": "close_before_headers"},
])
def test_upstream_failure_releases_the_reservation(workers: Workers,
                                                   scenario: dict[str, Any]) -> None:
    project_id, key = workers.project(budget=BUDGET)
    path, body = REQUESTS["chat"]
    response = httpx2.post(workers.url + path, json=body, timeout=30, headers={
        "authorization": f"Bearer {key}", "x-mock-scenario": json.dumps(scenario)})
    assert response.status_code >= 400
    assert response.json()["policy"]["project_id"] == project_id
    assert tokens_and_requests(workers, project_id) == (0, 0)


async def test_client_disconnect_mid_stream_gives_the_estimate_back(workers: Workers) -> None:
    project_id, key = workers.project(budget=BUDGET)
    path, body = REQUESTS["chat"]
    scenario = {"mode": "slow", "delay": 0.3, "chunks": [f"part {i} " for i in range(20)]}
    async with httpx2.AsyncClient(base_url=workers.url, timeout=30) as client:
        async with client.stream("POST", path, json={**body, "stream": True, "max_tokens": 500},
                                 headers={"authorization": f"Bearer {key}",
                                          "x-mock-scenario": json.dumps(scenario)}) as response:
            assert response.status_code == 200
            async for _ in response.aiter_bytes():
                break  # the client goes away after its first bytes
    await trio.to_thread.run_sync(workers.settled, project_id)
    tokens, requests = tokens_and_requests(workers, project_id)
    # The upstream was called, so the request counts. No usage was reported before the client
    # left: it is charged the input it sent plus at least the output it got, not the 500-token
    # estimate of the whole answer, and not nothing.
    sent = -(-len(body["messages"][-1]["content"]) // 4)
    assert requests == 1
    assert sent <= tokens < 500


async def test_client_disconnect_before_the_answer_is_charged_the_input(workers: Workers
                                                                        ) -> None:
    """Leaving before the answer's head does not give the request back: the upstream has it
    and reads its input (else a client could spend without limit by hanging up)."""
    project_id, key = workers.project(budget=BUDGET)
    path, body = REQUESTS["chat"]
    async with httpx2.AsyncClient(base_url=workers.url, timeout=30) as client:
        with trio.move_on_after(0.5) as left:
            await client.post(path, json={**body, "max_tokens": 500}, headers={
                "authorization": f"Bearer {key}",
                "x-mock-scenario": json.dumps({"mode": "slow", "delay": 3})})
    assert left.cancelled_caught
    await trio.to_thread.run_sync(workers.settled, project_id)
    tokens, requests = tokens_and_requests(workers, project_id)
    sent = -(-len(body["messages"][-1]["content"]) // 4)
    assert requests == 1
    assert sent <= tokens < 500  # the input, not the 500-token estimate of the answer
