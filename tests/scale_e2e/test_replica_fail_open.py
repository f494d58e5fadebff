"""`on_store_error = "open"` with Redis killed: requests pass within each replica's own bound,
their events and the metrics say quotas were not enforced, and exact counting resumes when Redis
is back, without a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx2
import pytest
import trio
from mock_upstream import MockUpstream
from quota_e2e.conftest import stop_workers
from redis_server import RedisServer

from .conftest import Replicas, start_replicas, wait_for_events
from .test_replica_quotas import chat, scenario, until_ready

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def open_replicas(mock_upstream: MockUpstream, shared_redis: RedisServer,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    running = start_replicas(tmp_path_factory.mktemp("open"), mock_upstream.url, shared_redis,
                             2, on_store_error="open")
    yield running
    for member in running.members:
        stop_workers(member)


async def send(client: httpx2.AsyncClient, url: str, key: str) -> httpx2.Response:
    return await client.post(f"{url}/policy/chat/completions", json=chat(),
                             headers={"authorization": f"Bearer {key}", **scenario()})


async def test_fail_open_passes_within_a_per_replica_bound(open_replicas: Replicas,
                                                           mock: MockUpstream) -> None:
    replicas = open_replicas
    first, second = replicas.urls
    project_id, key = replicas.project(budget={"requests": {"daily": 4}})
    async with httpx2.AsyncClient(timeout=30) as client:
        assert [(await send(client, first, key)).status_code for _ in range(2)] == [200, 200]
        async with trio.open_nursery() as nursery:
            in_flight: list[int] = []

            async def slow() -> None:
                answer = await client.post(
                    f"{second}/policy/chat/completions", json=chat(),
                    headers={"authorization": f"Bearer {key}", **scenario(slow=1.0)})
                in_flight.append(answer.status_code)

            nursery.start_soon(slow)
            assert await trio.to_thread.run_sync(mock.wait_for_requests, 3, 10.0)
            replicas.redis.stop()  # SIGKILL while the third request is at the upstream
            on_first = [(await send(client, first, key)).status_code for _ in range(4)]
            on_second = [(await send(client, second, key)).status_code for _ in range(4)]
        assert in_flight == [200]
        # Each replica bounds alone, from the last count it saw in Redis: 2 and 3 of 4.
        assert on_first == [200, 200, 429, 429]
        assert on_second == [200, 429, 429, 429]
        metrics = (await client.get(f"{second}/metrics")).text
        assert 'gateway_quota_store_errors_total{mode="open"} 4.0' in metrics

        replicas.redis.start()
        await until_ready(first)
        await until_ready(second)
        # Redis kept its 3 (append-only file): 1 more, whichever replica, then refused.
        resumed = [(await send(client, url, key)).status_code for url in (second, first) * 2]
        assert resumed == [200, 429, 429, 429]
    events = wait_for_events(replicas, project_id, 15)
    unenforced = [e for e in events
                  if json.loads(e["extra"] or "{}").get("quota_unenforced")]
    assert len(unenforced) == 3
    assert {json.loads(e["extra"])["quota_unenforced"] for e in unenforced} == {
        "quota_store_unavailable"}
    assert sorted(e["status"] for e in events) == [200] * 7 + [429] * 8
    assert all(e["status"] != 500 for e in events)
