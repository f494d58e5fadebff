"""The classification cache shared by replicas: verdicts by content hash in Redis, with the
per-worker LRU in front (docs/classifiers.md).

Redis holds only the hash of the classified content (never the text) and the scores, each entry
expiring after `cache_ttl` seconds. The cache saves calls and never decides anything: when Redis
does not answer (or holds something unreadable), a look-up is a miss and a store is skipped,
so the classifier is asked as if there were no cache. RedisLink logs the outage once. After a
failure Redis is left alone for `RETRY_AFTER` seconds: a Redis that hangs would otherwise cost
every request its command timeout, several times over.
"""

from __future__ import annotations

from typing import Any

import orjson
import trio

from gateway.errors import SharedStateUnavailable
from gateway.moderation.guard import MemoryCache
from gateway.moderation.verdicts import Verdict
from gateway.redis_link import RedisLink

#: Seconds the cache does without Redis after a failed command.
RETRY_AFTER = 5.0


class RedisVerdictCache:
    def __init__(self, link: RedisLink, ttl_seconds: int) -> None:
        self.link = link
        self.ttl_seconds = ttl_seconds
        self._resting_until = float("-inf")

    def _key(self, key: str) -> str:
        return self.link.key("moderation", key)

    @property
    def resting(self) -> bool:
        """True while Redis is left alone after a failure."""
        return trio.current_time() < self._resting_until

    async def get(self, key: str) -> Verdict | None:
        if self.resting:
            return None
        try:
            raw = await self.link.call(lambda client: client.get(self._key(key)))
        except SharedStateUnavailable:
            self._resting_until = trio.current_time() + RETRY_AFTER
            return None
        return _decoded(raw) if raw is not None else None

    async def put(self, key: str, verdict: Verdict) -> None:
        from glide import ExpirySet, ExpiryType

        if self.resting:
            return
        value = orjson.dumps({"scores": dict(verdict.scores), "unmapped": list(verdict.unmapped)})
        expiry = ExpirySet(ExpiryType.SEC, self.ttl_seconds)
        try:
            await self.link.call(lambda client: client.set(self._key(key), value,
                                                           expiry=expiry))
        except SharedStateUnavailable:
            self._resting_until = trio.current_time() + RETRY_AFTER


class LayeredCache:
    """The worker's LRU first, then the shared store; a shared hit is remembered locally."""

    def __init__(self, local: MemoryCache, shared: RedisVerdictCache) -> None:
        self.local = local
        self.shared = shared

    async def get(self, key: str) -> Verdict | None:
        found = await self.local.get(key)
        if found is None:
            found = await self.shared.get(key)
            if found is not None:
                await self.local.put(key, found)
        return found

    async def put(self, key: str, verdict: Verdict) -> None:
        await self.local.put(key, verdict)
        await self.shared.put(key, verdict)


def _decoded(raw: Any) -> Verdict | None:
    """A stored verdict, or None (a miss) for anything not in the shape this module writes."""
    try:
        data = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    scores, unmapped = data.get("scores"), data.get("unmapped")
    if not isinstance(scores, dict) or not isinstance(unmapped, list) or not all(
            isinstance(c, str) and isinstance(s, int | float) and not isinstance(s, bool)
            and 0.0 <= s <= 1.0 for c, s in scores.items()) or not all(
            isinstance(code, str) for code in unmapped):
        return None
    return Verdict({c: float(s) for c, s in scores.items()}, tuple(unmapped))
