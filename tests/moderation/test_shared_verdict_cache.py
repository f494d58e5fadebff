"""The classification cache shared by replicas, on a real redis-server: a result one replica
paid for is a hit on another, entries expire after `cache_ttl`, Redis holds hashes and scores
(never the text), and a Redis that is down or holds garbage only costs a classifier call."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import trio
import trio.testing
from redis_server import RedisServer

import dsl
from gateway.errors import SharedStateUnavailable
from gateway.moderation import ModerationSettings, Moderator
from gateway.moderation.shared_cache import RETRY_AFTER, LayeredCache, RedisVerdictCache
from gateway.moderation.verdicts import Verdict
from gateway.redis_link import RedisLink, RedisSettings
from tests.moderation_e2e.mock_moderation import moderation_result

POLICY = dsl.compile_policy('''policy v1 "p" {
  default allow
  rule r { when category "hate" in last_user then refuse reason HATE }
}''')
TEXT = "a private question about [[hate=0.7]] things"


class Endpoint:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        texts = json.loads(request.content)["input"]
        self.calls.append(texts)
        return httpx2.Response(200, json={"id": "m", "model": "x", "results": [
            moderation_result(text, "text") for text in texts]})


class Lookups:
    def __init__(self) -> None:
        self.hits: list[bool] = []

    def call_finished(self, classifier: str, kind: str, outcome: str, seconds: float) -> None:
        return None

    def cache_looked_up(self, classifier: str, hit: bool) -> None:
        self.hits.append(hit)


def replica(server: RedisServer, endpoint: Endpoint, **section: Any) -> Moderator:
    """One replica's moderator: its own LRU and Redis connection, the shared redis-server."""
    settings = ModerationSettings.from_mapping({
        "classifier": "openai", "openai": {"base_url": "http://moderation.test/v1"},
        "always_blocked": [], **section})
    link = RedisLink(RedisSettings(host="127.0.0.1", port=server.port, key_prefix="t:",
                                   request_timeout_ms=5000, connect_timeout_ms=5000))
    moderator = Moderator(settings, {}, transport=httpx2.MockTransport(endpoint), redis=link)
    moderator.observer = Lookups()
    return moderator


async def classify(moderator: Moderator, text: str = TEXT) -> dict[str, float]:
    outcome = await moderator.classify_request(
        [POLICY], dsl.RequestFacts(input_text=text, last_user_text=text), {})
    assert outcome.error is None
    return dict(outcome.scores)


async def close(*moderators: Moderator) -> None:
    for moderator in moderators:
        await moderator.aclose()
        assert isinstance(moderator.cache, LayeredCache)
        await moderator.cache.shared.link.aclose()


async def test_a_result_one_replica_paid_for_is_a_hit_on_another(redis: RedisServer) -> None:
    endpoint = Endpoint()
    first, second = replica(redis, endpoint), replica(redis, endpoint)
    assert await classify(first) == {"hate": 0.7}
    assert await classify(second) == {"hate": 0.7}
    assert await classify(second) == {"hate": 0.7}  # now from the second's own LRU
    assert endpoint.calls == [[TEXT]]
    assert isinstance(second.observer, Lookups) and second.observer.hits == [True, True]
    (key,) = redis.command("KEYS", "t:moderation:*")
    stored = redis.command("GET", key)
    assert "private question" not in key and "private question" not in stored
    assert json.loads(stored) == {"scores": {"hate": 0.7}, "unmapped": []}
    await close(first, second)


async def test_entries_expire_after_the_ttl(redis: RedisServer) -> None:
    endpoint = Endpoint()
    first = replica(redis, endpoint, cache_ttl=60)
    await classify(first)
    (key,) = redis.command("KEYS", "t:moderation:*")
    assert 0 < redis.command("TTL", key) <= 60
    redis.command("DEL", key)  # as when it expires: a fresh replica asks the classifier again
    second = replica(redis, endpoint, cache_ttl=60)
    await classify(second)
    assert len(endpoint.calls) == 2
    await close(first, second)


async def test_garbage_in_redis_is_a_miss(redis: RedisServer) -> None:
    endpoint = Endpoint()
    first = replica(redis, endpoint)
    await classify(first)
    (key,) = redis.command("KEYS", "t:moderation:*")
    for garbage in ("not json", '{"scores": {"hate": 7}, "unmapped": []}', "[1]",
                    '{"scores": {"hate": 0.1}, "unmapped": [3]}'):
        redis.command("SET", key, garbage)
        fresh = replica(redis, endpoint)
        assert await classify(fresh) == {"hate": 0.7}  # asked again, and stored right
        await close(fresh)
    assert len(endpoint.calls) == 5
    await close(first)


async def test_a_redis_that_is_down_costs_only_a_call(redis: RedisServer) -> None:
    endpoint = Endpoint()
    moderator = replica(redis, endpoint, cache_entries=0)  # no LRU: every look-up goes out
    redis.stop()
    assert await classify(moderator) == {"hate": 0.7}
    assert await classify(moderator) == {"hate": 0.7}
    assert len(endpoint.calls) == 2
    redis.start()
    await close(moderator)


class FailingLink:
    """A Redis link whose every command fails (as one that hangs past its timeout)."""

    def __init__(self) -> None:
        self.calls = 0

    def key(self, *parts: str) -> str:
        return ":".join(parts)

    async def call(self, command: Any) -> Any:
        self.calls += 1
        raise SharedStateUnavailable("Redis at redis://x is unavailable: timed out")


async def test_after_a_failure_redis_is_left_alone_for_a_while(
        autojump_clock: trio.testing.MockClock) -> None:
    link = FailingLink()
    cache = RedisVerdictCache(link, 60)  # type: ignore[arg-type]
    assert await cache.get("k") is None and link.calls == 1
    for _ in range(5):
        assert await cache.get("k") is None
        await cache.put("k", Verdict({"hate": 0.5}))
    assert link.calls == 1 and cache.resting
    await trio.sleep(RETRY_AFTER + 0.1)
    assert not cache.resting and await cache.get("k") is None and link.calls == 2
