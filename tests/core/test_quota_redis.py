"""What only the Redis quota store has: a network between it and its counters. Lost replies,
Redis killed and restarted (fail closed, fail open), key expiry with the window, hash tags, the
`[redis]` section. What both stores share is in test_quota_store.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
from quota_stores import redis_link
from redis_server import RedisServer

from dsl import QuotaLimit
from gateway.config import Config, ConfigError
from gateway.errors import QuotaUnavailable, SharedStateUnavailable
from gateway.quota.limits import QuotaRefused, QuotaRequest, QuotaSettings
from gateway.quota.redis import RedisHeld, RedisQuotaStore
from gateway.redis_link import RedisLink, RedisSettings, redis_settings

NOW = datetime(2024, 2, 28, 23, 59, 0, tzinfo=UTC)


def request(limit: int = 3, tokens: int = 0, token_limit: int = 0) -> QuotaRequest:
    limits = [QuotaLimit("requests", "daily", limit)]
    if token_limit:
        limits.append(QuotaLimit("tokens", "daily", token_limit))
    return QuotaRequest("proj", "alice", tokens, project_limits=tuple(limits),
                        user_limits=(QuotaLimit("requests", "hour", 100),))


def make(server: RedisServer, **settings: Any) -> RedisQuotaStore:
    return RedisQuotaStore(redis_link(server), QuotaSettings(**settings), clock=lambda: NOW)


def used(server: RedisServer, unit: str = "requests", kind: str = "project") -> int:
    keys = server.command("KEYS", f"*:c:{kind}:*:{unit}:*")
    return sum(int(server.command("GET", key)) for key in keys)


async def test_settlement_retried_after_a_lost_reply_counts_once(redis: RedisServer) -> None:
    store = make(redis)
    reservation = await store.admit(request(token_limit=1000, tokens=300))
    real_call = store.link.call
    lost = []

    async def reply_lost_once(command: Any) -> Any:
        result = await real_call(command)  # Redis ran it...
        if not lost:
            lost.append(result)  # ...and the answer never came back
            raise SharedStateUnavailable("connection reset")
        return result

    store.link.call = reply_lost_once  # type: ignore[method-assign]
    await store.settle(reservation, 100, 20)  # no nursery: settles inline, retrying
    assert lost == [1]
    assert used(redis, "tokens") == 120 and used(redis) == 1
    assert not await store.finish(reservation.token, "settle", 120)  # any later repeat: nothing
    await store.release(reservation)  # a release after the settlement gives nothing back
    assert used(redis, "tokens") == 120 and used(redis) == 1
    await store.link.aclose()


async def test_settlement_is_done_when_settle_returns_even_with_a_nursery(
        redis: RedisServer) -> None:
    """The next request must see this one's usage: settle() returns once Redis counted it,
    although retries could go to the background."""
    async with trio.open_nursery() as nursery:
        store = RedisQuotaStore(redis_link(redis), QuotaSettings(), clock=lambda: NOW,
                                background=lambda: nursery)
        reservation = await store.admit(request(token_limit=1000, tokens=300))
        assert used(redis, "tokens") == 300
        await store.settle(reservation, 100, 20)
        assert used(redis, "tokens") == 120  # no checkpoint in between: done in line
    await store.link.aclose()


async def test_a_failing_settlement_does_not_hold_the_answer_back(redis: RedisServer) -> None:
    """One attempt in line; when Redis fails it, settle() returns and the retries go on in the
    nursery, counting once."""
    async with trio.open_nursery() as nursery:
        store = RedisQuotaStore(redis_link(redis), QuotaSettings(), clock=lambda: NOW,
                                background=lambda: nursery)
        reservation = await store.admit(request(token_limit=1000, tokens=300))
        real_call = store.link.call
        failures: list[float] = []

        async def fail_twice(command: Any) -> Any:
            if len(failures) < 2:
                failures.append(trio.current_time())
                raise SharedStateUnavailable("connection reset")
            return await real_call(command)

        store.link.call = fail_twice  # type: ignore[method-assign]
        started = trio.current_time()
        await store.settle(reservation, 100, 20)
        assert trio.current_time() - started < 0.04  # no retry delay before it returned
        assert len(failures) == 1 and used(redis, "tokens") == 300
    # The nursery waited for the retries: counted once, with the real usage.
    assert len(failures) == 2 and used(redis, "tokens") == 120
    await store.link.aclose()


async def test_release_gives_back_once_and_frees_the_slot(redis: RedisServer) -> None:
    store = make(redis)
    first = await store.admit(request(limit=1, token_limit=1000, tokens=50))
    await store.release(first)
    await store.release(first)
    assert used(redis) == 0 and used(redis, "tokens") == 0
    await store.admit(request(limit=1, token_limit=1000, tokens=50))
    with pytest.raises(QuotaRefused):
        await store.admit(request(limit=1))
    assert redis.command("KEYS", "*:rs") and not redis.command("KEYS", "*:r:*")[1:]
    await store.link.aclose()


async def test_counters_expire_with_their_window_and_records_after_them(
        redis: RedisServer) -> None:
    store = make(redis, reservation_ttl_seconds=60)
    await store.admit(request())
    [daily] = redis.command("KEYS", "*:c:project:*:daily:*")
    [hourly] = redis.command("KEYS", "*:c:user:*:hour:*")
    # 23:59 -> midnight is 60 s, plus the 60 s during which a reservation may still settle.
    assert 119_000 < redis.command("PTTL", daily) <= 120_000
    assert 119_000 < redis.command("PTTL", hourly) <= 120_000
    [record] = redis.command("KEYS", "*:r:*")
    assert redis.command("PTTL", record) > redis.command("PTTL", daily)
    await store.link.aclose()


async def test_every_key_of_an_admission_shares_the_projects_hash_tag(redis: RedisServer) -> None:
    store = make(redis)
    for project in ("proj", "with}brace{", "a:b", "x" * 1000):
        await store.admit(QuotaRequest(project, "u{1}", 5, project_limits=(
            QuotaLimit("tokens", "daily", 100),), user_limits=(
            QuotaLimit("requests", "minute", 5),)))
    tags = {key.split("}")[0] + "}" for key in redis.command("KEYS", "*")}
    assert len(tags) == 4
    assert all(tag.count("{") == 1 for tag in tags)
    await store.link.aclose()


async def test_no_limits_never_reaches_redis() -> None:
    dead = RedisLink(RedisSettings(host="127.0.0.1", port=1, request_timeout_ms=50))
    store = RedisQuotaStore(dead)
    reservation = await store.admit(QuotaRequest("proj", "alice", 10))
    await store.settle(reservation, 1, 1)
    await store.release(reservation)
    assert dead._client is None


async def test_fail_closed_refuses_with_503_then_counting_resumes(redis: RedisServer) -> None:
    store = make(redis)
    await store.admit(request(limit=2))
    redis.stop()
    with pytest.raises(QuotaUnavailable) as unavailable:
        await store.admit(request(limit=2))
    assert unavailable.value.status == 503 and unavailable.value.code == "quota_unavailable"
    assert unavailable.value.headers["retry-after"] == "1"
    assert store.store_errors == {"closed": 1, "open": 0}
    assert store.link.last_error is not None
    redis.start()  # empty: its data was not persisted in this test
    await wait_until_redis_answers(store)
    await store.admit(request(limit=2))
    await store.admit(request(limit=2))
    with pytest.raises(QuotaRefused):
        await store.admit(request(limit=2))
    assert store.link.last_error is None
    await store.link.aclose()


async def test_fail_open_admits_within_a_local_bound(redis: RedisServer) -> None:
    store = make(redis, on_store_error="open")
    await store.admit(request(limit=3))
    await store.admit(request(limit=3))
    redis.stop()
    unenforced = await store.admit(request(limit=3))  # the local bound starts from 2
    assert unenforced.unenforced == "quota_store_unavailable" and unenforced.token is None
    with pytest.raises(QuotaRefused):
        await store.admit(request(limit=3))
    await store.settle(unenforced, 1, 1)  # nothing to settle in Redis: no error
    assert store.store_errors == {"closed": 0, "open": 2}
    redis.start()
    await wait_until_redis_answers(store)
    exact = await store.admit(request(limit=3))
    assert exact.unenforced is None and isinstance(exact.token, RedisHeld)
    await store.link.aclose()


async def wait_until_redis_answers(store: RedisQuotaStore) -> None:
    with trio.fail_after(10):
        for _ in range(200):
            if await store.link.ping() == "ok":
                return
            await trio.sleep(0.05)


def test_redis_section_is_strict() -> None:
    env = {"REDIS_PW": "s3cret"}
    s = RedisSettings.from_mapping({"url": "rediss://cache:6380/2", "username": "gw",
                                    "password_env": "REDIS_PW", "key_prefix": "prod:"}, env)
    assert (s.host, s.port, s.database, s.tls, s.username, s.password, s.key_prefix) == (
        "cache", 6380, 2, True, "gw", "s3cret", "prod:")
    for section, message in [
            ({}, "url is required"),
            ({"url": "http://x"}, "redis://"),
            ({"url": "redis://:pw@x"}, "password_env"),
            ({"url": "redis://x/db"}, "number"),
            ({"url": "redis://x", "password_env": "MISSING"}, "not set"),
            ({"url": "redis://x", "key_prefix": "{x}"}, "key_prefix"),
            ({"url": "redis://x", "colour": 1}, "unknown"),
            ({"url": "redis://x", "request_timeout_ms": 0}, "request_timeout_ms"),
            ({"url": "redis://x/3", "cluster": True}, "database 0")]:
        with pytest.raises(ValueError, match=message):
            RedisSettings.from_mapping(section, env)


def test_quotas_section_chooses_the_store_and_the_failure_mode() -> None:
    assert QuotaSettings.from_mapping({}).store == "sqlite"
    assert QuotaSettings.from_mapping({}).on_store_error == "closed"
    chosen = QuotaSettings.from_mapping({"store": "redis", "on_store_error": "open"})
    assert (chosen.store, chosen.on_store_error) == ("redis", "open")
    with pytest.raises(ValueError, match="store"):
        QuotaSettings.from_mapping({"store": "memcached"})
    with pytest.raises(ValueError, match="on_store_error"):
        QuotaSettings.from_mapping({"on_store_error": "maybe"})
    config = Config.from_mapping({"redis": {"url": "redis://127.0.0.1:1/0"}})
    assert redis_settings(config) is not None
    with pytest.raises(ConfigError, match="url"):
        redis_settings(Config.from_mapping({"redis": {"url": 5}}))


def test_a_window_rolls_over_in_redis_too(redis: RedisServer) -> None:
    now = [NOW]
    store = RedisQuotaStore(redis_link(redis), clock=lambda: now[0])

    async def admit() -> None:
        store.link = redis_link(redis)
        try:
            await store.admit(request(limit=1))
        finally:
            await store.link.aclose()

    trio.run(admit)
    with pytest.raises(QuotaRefused):
        trio.run(admit)
    now[0] += timedelta(minutes=1)
    trio.run(admit)


async def test_usage_report_reads_the_current_windows_in_redis(redis: RedisServer) -> None:
    store = make(redis)
    for subject, tokens in (("alice", 10), ("alice", 10), ("bob", 10), ("x" * 300, 5)):
        await store.admit(QuotaRequest("proj", subject, tokens, project_limits=(
            QuotaLimit("requests", "daily", 100),), user_limits=(
            QuotaLimit("tokens", "hour", 1000),)))
    await store.admit(QuotaRequest("other", "alice", 10, project_limits=(
        QuotaLimit("requests", "daily", 100),)))
    report = await store.usage_report("proj", NOW, budget={"requests": {"daily": 100}},
                                      user_quota={"tokens": {"hour": 1000}}, top=2)
    assert report["project"] == [{"unit": "requests", "window": "daily", "used": 4,
                                  "limit": 100, "reset_at": "2024-02-29T00:00:00Z"}]
    assert [u["quota_subject"] for u in report["users"]] == ["alice", "bob"]
    assert report["users"][0]["counters"][0]["used"] == 20
    assert report["open_reservations"] == 4
    await store.link.aclose()


async def test_a_full_redis_refuses_writes_and_the_store_fails_closed(redis: RedisServer) -> None:
    """With `noeviction`, a Redis at its memory limit refuses writes instead of dropping
    counters: the store reports it unavailable, nothing is admitted unknowingly."""
    store = make(redis)
    await store.admit(request())
    assert redis.command("CONFIG", "SET", "maxmemory", "1") == "OK"
    try:
        with pytest.raises(QuotaUnavailable):
            await store.admit(request())
    finally:
        assert redis.command("CONFIG", "SET", "maxmemory", "0") == "OK"
    await store.admit(request())
    await store.link.aclose()
