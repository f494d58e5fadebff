"""Connector leases in Redis (gateway/events/leases.py): one holder per connector and event
store across replicas; replicas with their own event stores each deliver their own events."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from quota_stores import redis_link
from redis_server import RedisServer

from gateway.db import open_database
from gateway.events.leases import RedisConnectorLease


def lease(path: Path, owner: str, server: RedisServer) -> RedisConnectorLease:
    open_database(str(path)).conn.close()  # the schema, as the gateway makes it
    # The gateway's own request budget: a claim against a Redis that went away fails well
    # within the lease's 5 s.
    link = redis_link(server, request_timeout_ms=250)
    return RedisConnectorLease(str(path), "hook", owner, link, ttl=5.0)


async def test_one_holder_per_connector_and_event_store(redis: RedisServer,
                                                        tmp_path: Path) -> None:
    a = lease(tmp_path / "shared.db", "replica-a", redis)
    b = lease(tmp_path / "shared.db", "replica-b", redis)
    elsewhere = lease(tmp_path / "other.db", "replica-c", redis)
    run = trio.to_thread.run_sync
    assert await run(a.claim) and await run(a.claim)  # taken, then renewed
    assert not await run(b.claim)  # the same store: one deliverer
    assert await run(elsewhere.claim)  # its own store: delivers its own events
    holder = await run(b.holder)
    assert holder is not None and holder[0] == "replica-a"
    await run(b.release)  # not b's to give up: nothing changes
    assert not await run(b.claim)
    await run(a.release)
    assert await run(b.claim) and a.expires_at is None
    for each in (a, b, elsewhere):
        each.close()
        await each.link.aclose()


async def test_redis_down_means_not_held(redis: RedisServer, tmp_path: Path) -> None:
    from gateway.errors import SharedStateUnavailable

    a = lease(tmp_path / "shared.db", "replica-a", redis)
    assert await trio.to_thread.run_sync(a.claim)
    redis.stop()
    with pytest.raises(SharedStateUnavailable):
        await trio.to_thread.run_sync(a.claim)
    assert a.held()  # the connector goes on only while its last claim lasts
    a.close()
    await a.link.aclose()
