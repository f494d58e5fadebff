"""Where the rollout engine keeps its auto-rollback windows (gateway/policy/rollout.py).

- `LocalRolloutState` (the default): the windows of this worker process; each trips on its own
  traffic.
- `RedisRolloutState` (when `[redis]` is configured): the windows of every replica, summed in
  Redis, so a spike spread over replicas trips one rollback, and every replica enters it within
  `SYNC_SECONDS`. The request path stays free of I/O: decisions are counted here and a
  background task (`run`, owned by the app's nursery) adds them to Redis in batches, with one
  atomic script per policy that also trips the rollback, once, and tells the caller about any
  rollback in force. Only the replica whose script tripped it emits the `auto_rollback` and
  `rollback_end` events; the others follow silently. Redis down: nothing trips, the configured
  stages stay in force, and counting resumes when it answers.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import trio

import dsl
from gateway.errors import SharedStateUnavailable

log = logging.getLogger("gateway.policy.rollout")

#: How often a replica sends its counts and reads the shared rollback state.
SYNC_SECONDS = 0.25


@dataclass(frozen=True)
class SharedRollback:
    """A rollback in force for one policy revision, as the shared state holds it."""

    #: End of the cooldown, on the caller's clock (the engine's `now`).
    until: float
    share_pct: float
    matching: int
    total: int
    #: True on the replica that tripped it: it alone emits the events.
    announce: bool


class LocalRolloutState:
    """The engine's own windows: nothing shared, nothing to run."""

    shared = False

    def record(self, policy_id: str, revision: int, auto: dsl.AutoRollback, matches: bool,
               bucket_seconds: float) -> None:
        return None

    def rollback(self, policy_id: str, revision: int, now: float) -> SharedRollback | None:
        return None


_SYNC = """
-- KEYS: 1 the window's buckets (hash: '<index>:t' and '<index>:m'), 2 the rollback in force.
-- ARGV: 1 now (ms), 2 bucket seconds, 3 buckets in the window, 4 min_requests, 5 threshold_pct,
-- 6 cooldown (ms), 7 this replica's id, then triples: bucket index, total, matching.
local rollback = redis.call('GET', KEYS[2])
if rollback then
  return {rollback, redis.call('PTTL', KEYS[2])}
end
for i = 8, #ARGV, 3 do
  redis.call('HINCRBY', KEYS[1], ARGV[i] .. ':t', ARGV[i + 1])
  redis.call('HINCRBY', KEYS[1], ARGV[i] .. ':m', ARGV[i + 2])
end
local current = math.floor(tonumber(ARGV[1]) / 1000 / tonumber(ARGV[2]))
local oldest = current - tonumber(ARGV[3])
local total, matching = 0, 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local index, kind = string.match(fields[i], '^(%-?%d+):(%a)$')
  if tonumber(index) < oldest then
    redis.call('HDEL', KEYS[1], fields[i])
  elseif kind == 't' then
    total = total + tonumber(fields[i + 1])
  else
    matching = matching + tonumber(fields[i + 1])
  end
end
redis.call('PEXPIRE', KEYS[1], math.floor((tonumber(ARGV[3]) + 1) * tonumber(ARGV[2]) * 1000))
if total >= math.max(1, tonumber(ARGV[4])) and matching * 100 > tonumber(ARGV[5]) * total then
  rollback = cjson.encode({by = ARGV[7], matching = matching, total = total})
  redis.call('SET', KEYS[2], rollback, 'PX', ARGV[6])
  redis.call('DEL', KEYS[1])  -- the configured stages return with an empty window
  return {rollback, tonumber(ARGV[6])}
end
return {'', 0}
"""


@dataclass
class _Tracked:
    auto: dsl.AutoRollback
    bucket_seconds: float
    #: bucket index (wall clock) -> [total, matching] not yet sent
    pending: dict[int, list[int]]


class RedisRolloutState:
    """Windows summed across replicas in Redis (see the module docstring)."""

    shared = True

    def __init__(self, link: Any, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = trio.current_time) -> None:
        from glide import Script

        self.link = link
        self.clock = clock
        #: The engine's clock (its `now`): rollbacks are handed over on it.
        self.monotonic = monotonic
        self.replica = os.urandom(8).hex()
        self._script = Script(_SYNC)
        self._tracked: dict[tuple[str, int], _Tracked] = {}
        self._rollbacks: dict[tuple[str, int], SharedRollback] = {}

    def record(self, policy_id: str, revision: int, auto: dsl.AutoRollback, matches: bool,
               bucket_seconds: float) -> None:
        tracked = self._tracked.get((policy_id, revision))
        if tracked is None or tracked.auto != auto:
            tracked = self._tracked[(policy_id, revision)] = _Tracked(
                auto, bucket_seconds, defaultdict(lambda: [0, 0]))
        bucket = tracked.pending[int(self.clock() // bucket_seconds)]
        bucket[0] += 1
        bucket[1] += matches

    def rollback(self, policy_id: str, revision: int, now: float) -> SharedRollback | None:
        found = self._rollbacks.get((policy_id, revision))
        return found if found is not None and now < found.until else None

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                await self.sync()
            except Exception:  # a bug of ours must not end the worker: rollout stays local
                log.exception("shared rollout state: sync failed")
            await trio.sleep(SYNC_SECONDS)

    async def sync(self) -> None:
        """Send every policy's counts; learn the rollbacks in force."""
        for (policy_id, revision), tracked in list(self._tracked.items()):
            pending, tracked.pending = tracked.pending, defaultdict(lambda: [0, 0])
            try:
                await self._sync_one(policy_id, revision, tracked, pending)
            except SharedStateUnavailable:
                return  # counts of this round are lost: the window is a sample anyway

    async def _sync_one(self, policy_id: str, revision: int, tracked: _Tracked,
                        pending: dict[int, list[int]]) -> None:
        auto, width = tracked.auto, tracked.bucket_seconds
        # One hash tag for both keys: one Cluster slot for the script.
        base = self.link.key("ro", "{" + _part(policy_id) + ":" + str(revision) + "}")
        args = [str(int(self.clock() * 1000)), repr(width),
                str(max(1, int(-(-auto.window_minutes * 60 // width)))), str(auto.min_requests),
                repr(float(auto.threshold_pct)), str(int(auto.cooldown_minutes * 60_000)),
                self.replica]
        for index, (total, matching) in pending.items():
            args += [str(index), str(total), str(matching)]
        reply = await self.link.call(lambda client: client.invoke_script(
            self._script, keys=[base + ":b", base + ":rb"], args=args))
        value, remaining_ms = reply[0], int(reply[1])
        if not value:
            self._rollbacks.pop((policy_id, revision), None)
            return
        figures = orjson.loads(value)
        self._rollbacks[(policy_id, revision)] = SharedRollback(
            until=self.monotonic() + remaining_ms / 1000.0,
            share_pct=100.0 * figures["matching"] / max(1, figures["total"]),
            matching=int(figures["matching"]), total=int(figures["total"]),
            announce=figures["by"] == self.replica)


def _part(value: str) -> str:
    from gateway.quota.redis import key_part

    return key_part(value)
