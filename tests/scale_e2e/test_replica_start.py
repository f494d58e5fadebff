"""A replica started while Redis is down: it serves, `/readyz` says why it is not ready (and the
log says so once), and it uses Redis as soon as Redis answers, without a restart."""

from __future__ import annotations

import httpx2
import pytest
from mock_upstream import MockUpstream
from quota_e2e.conftest import start_workers, stop_workers
from redis_server import RedisServer

from .conftest import redis_config
from .test_replica_quotas import chat, scenario, until_ready

pytestmark = pytest.mark.slow


async def test_redis_down_at_start_is_not_ready_until_it_answers(
        mock: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> None:
    redis = RedisServer(tmp_path_factory.mktemp("late-redis"))  # not started yet
    root = tmp_path_factory.mktemp("late")
    replica = start_workers(root, mock.url, processes=1, extra_config=redis_config(redis))
    try:
        async with httpx2.AsyncClient(timeout=30) as client:
            ready = await client.get(f"{replica.url}/readyz")
            assert ready.status_code == 503
            assert ready.json()["reasons"] == ["redis_unavailable"]  # details: admins only
            _, key = replica.project(budget={"requests": {"daily": 2}})
            headers = {"authorization": f"Bearer {key}", **scenario()}
            refused = await client.post(f"{replica.url}/policy/chat/completions", json=chat(),
                                        headers=headers)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "quota_unavailable"

            redis.start()
            await until_ready(replica.url)
            statuses = [(await client.post(f"{replica.url}/policy/chat/completions",
                                           json=chat(), headers=headers)).status_code
                        for _ in range(3)]
            assert statuses == [200, 200, 429]
    finally:
        stop_workers(replica)
        redis.stop()
    log = (root / "gateway.log").read_text()
    assert log.count("does not answer at start") == 1
    assert "answers again" in log
