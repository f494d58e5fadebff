"""What keeps an external classifier cheap and a failing one out of the way: a content-hash
result cache, a circuit breaker, and the metrics hooks."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Protocol

import trio

from gateway.errors import BreakerOpen
from gateway.moderation.verdicts import Verdict


def content_key(classifier: str, model: str, kind: str, content: str) -> str:
    """The cache key of one classified content: a hash, never the text itself."""
    digest = hashlib.sha256()
    for part in (classifier, model, kind):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(content.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


class VerdictCache(Protocol):
    """Where verdicts are remembered: the in-memory LRU, or it in front of Redis
    (gateway/moderation/shared_cache.py). Async, for the shared store's sake."""

    async def get(self, key: str) -> Verdict | None: ...

    async def put(self, key: str, verdict: Verdict) -> None: ...


class MemoryCache:
    """A bounded LRU of verdicts by content hash, per worker. `capacity` 0 remembers nothing."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, Verdict] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> Verdict | None:
        verdict = self._entries.get(key)
        if verdict is not None:
            self._entries.move_to_end(key)
        return verdict

    async def put(self, key: str, verdict: Verdict) -> None:
        if self.capacity <= 0:
            return
        self._entries[key] = verdict
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


class CircuitBreaker:
    """Closed: calls go through. After `failures` consecutive failures it opens: calls fail at
    once for `cooldown` seconds. Then it is half-open: one trial call goes through (the others
    still fail at once); its success closes the breaker, its failure opens it again."""

    def __init__(self, failures: int, cooldown: float,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at < self.cooldown or self._trial_running:
            return "open"
        return "half-open"

    def before_call(self) -> None:
        """Raises BreakerOpen when the call must not be made."""
        state = self.state
        if state == "open":
            raise BreakerOpen("the classifier's circuit breaker is open after repeated failures")
        if state == "half-open":
            self._trial_running = True

    def succeeded(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._trial_running = False

    def abandoned(self) -> None:
        """A call ended without an answer either way (its request was cancelled)."""
        self._trial_running = False

    def failed(self) -> None:
        self._consecutive += 1
        if self._trial_running or self._consecutive >= self.failures:
            self._opened_at = self._clock()
        self._trial_running = False


class ModerationObserver(Protocol):
    """The metrics hooks (gateway/moderation/metrics.py implements them with prometheus)."""

    def call_finished(self, classifier: str, kind: str, outcome: str, seconds: float) -> None:
        """One call of an external classifier: `outcome` is `ok` or the failure's kind."""

    def cache_looked_up(self, classifier: str, hit: bool) -> None: ...


class NoObserver:
    def call_finished(self, classifier: str, kind: str, outcome: str, seconds: float) -> None:
        return None

    def cache_looked_up(self, classifier: str, hit: bool) -> None:
        return None


def merged(*scores: Mapping[str, float]) -> dict[str, float]:
    """Category scores of several parts (texts, images) taken together: the highest wins."""
    found: dict[str, float] = {}
    for part in scores:
        for category, score in part.items():
            if score > found.get(category, 0.0):
                found[category] = score
    return found
