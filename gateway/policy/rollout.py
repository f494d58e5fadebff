"""The rollout engine of the governed surface (docs/policy-language.md): sans-I/O, one instance per
worker.

The gateway calls it on every `/policy/*` request once the policy has decided; it never reads a
clock, draws a random number or does I/O itself: the caller passes `now` (seconds, any monotonic
origin) and `rand` (a uniform float in [0, 1), used only for subject-less canary sampling).

Public API::

    engine = RolloutEngine()
    outcome = engine.resolve(policy, target="mobile-app", quota_subject="u-42",
                             decision="refuse", now=trio.current_time(), rand=random.random(),
                             policy_id=None, revision=3)
    outcome.rollout_mode        # "shadow" | "canary" | "enforced" | "rollback"
    outcome.enforced            # bool: was the raw decision acted on
    outcome.effective_decision  # "allow" whenever not enforced, else the raw decision
    outcome.stage               # the configured rollout stage of the target, e.g. "canary 10%"
                                # (a rollout stage, not the `policy` object's `stage`)
    outcome.events              # tuple[RevisionEventRequest, ...]: revision events to emit
    engine.status(policy_id) -> RolloutStatus | None   # window counts, rollback end; metrics

    RevisionEventRequest(edit_type, policy_id, revision, at, share_pct, matching, total, reason)
    RolloutStatus(revision, rollback_until, matching, total, buckets)
    sticky_sample(policy_id, revision, subject) -> float in [0, 1)
    canary_enforces(percentage, policy_id, revision, subject, rand) -> bool

`policy` is a `dsl.CompiledPolicy`; its `rollout.stage_for(target)` gives the stage. `policy_id`
defaults to `policy.policy_id`. A policy without a rollout block is enforced everywhere.

Stages:

- `shadow`: never enforced. `enforced`: always. `canary p%`: enforced when the subject's sticky
  sample is below p/100. The sample is a blake2b hash of `"{policy_id}:{revision}:{subject}"`
  mapped to [0, 1), so one user keeps one behaviour for a revision and a new revision re-samples.
  Without a subject (None or "") `rand` is the sample.
- Quotas are not subject to rollout: they are always enforced, before this engine runs, and a
  quota refusal never reaches it.

Auto-rollback (when the policy declares `auto_rollback` with `enabled true`), per policy id:

- Which decisions count: the raw decision of every request whose target's stage is `canary` or
  `enforced` (for a canary target, sampled-in or not: the raw decision does not depend on the
  sample, so counting the whole target gives a larger sample without bias). Shadow traffic does
  not count: rollback protects users from what enforcement does to them, and a spike seen only on
  shadow targets (often different traffic, such as "everything else") harms nobody, so it must
  not switch off enforcement where it was deliberately turned on. A policy that is shadow
  everywhere therefore never rolls back.
- The window: counts in 10-second buckets (at most `window_minutes * 6 + 1` of them, whatever
  the request rate), evicted as time moves on; O(1) amortised per request. An observation
  leaves the window between `window_minutes` and `window_minutes` + 10 s after it was made
  (bucket granularity). A `now` earlier than one already seen counts in the newest bucket.
- The trip: once the window holds at least `min_requests` decisions and the share whose decision
  is in `rollback_decisions` strictly exceeds `threshold_pct`, the policy enters `rollback` for
  `cooldown_minutes`; the request that tripped it is already not enforced, and its outcome
  carries one `auto_rollback` event request. During the cooldown every target of the policy
  answers `rollout_mode="rollback"`, nothing is enforced, and nothing is counted (the policy
  still decides the same way, so counting would only re-trip it at once).
- The end: the first call at or after the end of the cooldown carries one `rollback_end` event
  request (reason `cooldown_elapsed`); the configured stages return and the window starts
  empty, so `min_requests` fresh decisions are needed before it can trip again. No call, no end
  event: a worker that gets no traffic for that policy reports the end late.
- A new revision of a policy starts with fresh state; if the old revision was in rollback, its
  `rollback_end` (reason `revision_replaced`) is carried by the first call of the new one, so
  every `auto_rollback` event gets its end.

Where the windows live is the engine's `state` (gateway/policy/rollout_state.py). By default
(`LocalRolloutState`) in this object, one per worker process, so with N workers each trips on its
own traffic. With Redis configured (`RedisRolloutState`) the windows of every replica are summed
in Redis: a spike spread across replicas trips one rollback (one `auto_rollback` event, from the
replica that tripped it, which also emits its `rollback_end`), and every replica follows it
within a second. Canary sampling needs no shared state: the hash gives the same answer on every
replica. Not thread-safe: one trio thread per worker.
Memory: one small record per policy id (the latest revision seen), each window bounded as above.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import dsl
from gateway.policy.rollout_state import LocalRolloutState, SharedRollback

#: Width of a window bucket in seconds: bounds memory and sets the window's granularity.
BUCKET_SECONDS = 10.0

_HASH_SPACE = float(1 << 64)


@dataclass(frozen=True)
class RevisionEventRequest:
    """A revision event (docs/events.md) the gateway should emit: `edit_type` is `auto_rollback` or
    `rollback_end`. `share_pct`, `matching` and `total` are the window figures that tripped the
    rollback (repeated on its end event so the pair can be read alone)."""

    edit_type: str
    policy_id: str
    revision: int
    at: float
    share_pct: float
    matching: int
    total: int
    #: why it happened: "threshold_exceeded", "cooldown_elapsed" or "revision_replaced".
    reason: str


@dataclass(frozen=True)
class RolloutStatus:
    """What the engine holds for one policy id, for metrics and debugging."""

    revision: int
    rollback_until: float | None  # end of the cooldown while in rollback, else None
    matching: int  # decisions in the window that are in `rollback_decisions`
    total: int  # decisions in the window
    buckets: int  # window buckets held (memory bound: window_minutes * 6 + 1)


@dataclass(frozen=True)
class RolloutOutcome:
    rollout_mode: str
    enforced: bool
    effective_decision: str
    stage: str
    events: tuple[RevisionEventRequest, ...] = ()


def sticky_sample(policy_id: str, revision: int, subject: str) -> float:
    """A stable pseudo-random number in [0, 1) for this subject and policy revision."""
    digest = hashlib.blake2b(f"{policy_id}:{revision}:{subject}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SPACE


def canary_enforces(percentage: float, policy_id: str, revision: int, subject: str | None,
                    rand: float) -> bool:
    sample = sticky_sample(policy_id, revision, subject) if subject else rand
    return sample < percentage / 100.0


class _Window:
    """Decision counts over the current bucket and the `bucket_count` before it, oldest first:
    one bucket more than the window spans, so an observation never leaves early."""

    def __init__(self, bucket_count: int) -> None:
        self.bucket_count = bucket_count
        self._buckets: deque[list[int]] = deque()  # [bucket index, total, matching]
        self.total = 0
        self.matching = 0

    def add(self, now: float, matches: bool) -> None:
        index = int(now // BUCKET_SECONDS)
        if self._buckets and index <= self._buckets[-1][0]:
            bucket = self._buckets[-1]  # same bucket, or time went backwards: newest bucket
        else:
            bucket = [index, 0, 0]
            self._buckets.append(bucket)
            self._evict_before(index - self.bucket_count)
        bucket[1] += 1
        bucket[2] += matches
        self.total += 1
        self.matching += matches

    def _evict_before(self, oldest_kept: int) -> None:
        while self._buckets and self._buckets[0][0] < oldest_kept:
            _, total, matching = self._buckets.popleft()
            self.total -= total
            self.matching -= matching

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass
class _PolicyState:
    revision: int
    window: _Window | None = None
    rollback_until: float | None = None
    #: the auto_rollback event of the current rollback, to build its end event from.
    tripped: RevisionEventRequest | None = None
    #: Whether this engine emits the rollback's events (False: another replica tripped it).
    announce: bool = True
    events: list[RevisionEventRequest] = field(default_factory=list)


class RolloutEngine:
    """Rollout decisions and auto-rollback state for one worker process (see module docstring)."""

    def __init__(self, state: LocalRolloutState | Any = None) -> None:
        self._states: dict[str, _PolicyState] = {}
        #: Where the auto-rollback windows live (`LocalRolloutState` or `RedisRolloutState`).
        self.state = state if state is not None else LocalRolloutState()

    def resolve(self, policy: dsl.CompiledPolicy, *, target: str, quota_subject: str | None,
                decision: str, now: float, rand: float, revision: int,
                policy_id: str | None = None) -> RolloutOutcome:
        policy_id = policy_id if policy_id is not None else policy.policy_id
        stage = policy.rollout.stage_for(target)
        auto = policy.rollout.auto_rollback
        state = self._state(policy_id, revision, now)
        if state.rollback_until is not None and now >= state.rollback_until:
            self._end_rollback(state, policy_id, now, "cooldown_elapsed")
        if state.rollback_until is None and auto is not None and auto.enabled:
            shared = self.state.rollback(policy_id, revision, now)
            if shared is not None:  # tripped by the windows of every replica
                self._follow_rollback(state, shared, policy_id, now)
        if state.rollback_until is not None:
            return self._outcome("rollback", False, decision, stage, state)

        if stage.mode == "shadow":
            return self._outcome("shadow", False, decision, stage, state)
        if auto is not None and auto.enabled:
            if self.state.shared:
                self.state.record(policy_id, revision, auto,
                                  decision in auto.rollback_decisions, BUCKET_SECONDS)
            elif self._observe(state, auto, decision, now):
                self._start_rollback(state, auto, policy_id, now)
                return self._outcome("rollback", False, decision, stage, state)
        if stage.mode == "canary":
            enforced = canary_enforces(stage.percentage, policy_id, revision, quota_subject, rand)
            return self._outcome("canary", enforced, decision, stage, state)
        return self._outcome("enforced", True, decision, stage, state)

    def status(self, policy_id: str) -> RolloutStatus | None:
        """The state held for `policy_id` (its latest revision seen), or None if never seen."""
        state = self._states.get(policy_id)
        if state is None:
            return None
        window = state.window
        rollback_until = state.rollback_until
        if rollback_until is None:  # a rollback tripped by other replicas, not yet followed here
            shared = self.state.rollback(policy_id, state.revision, float("-inf"))
            rollback_until = shared.until if shared is not None else None
        return RolloutStatus(
            revision=state.revision, rollback_until=rollback_until,
            matching=window.matching if window else 0, total=window.total if window else 0,
            buckets=len(window) if window else 0)

    # --- auto-rollback ---------------------------------------------------------------------

    def _state(self, policy_id: str, revision: int, now: float) -> _PolicyState:
        state = self._states.get(policy_id)
        if state is None or state.revision != revision:
            fresh = _PolicyState(revision)
            if state is not None and state.rollback_until is not None:
                self._end_rollback(state, policy_id, now, "revision_replaced")
                fresh.events.extend(state.events)
            self._states[policy_id] = state = fresh
        return state

    @staticmethod
    def _observe(state: _PolicyState, auto: dsl.AutoRollback, decision: str, now: float) -> bool:
        """Count one decision; True when the window now calls for a rollback."""
        if state.window is None:
            state.window = _Window(max(1, int(-(-auto.window_minutes * 60 // BUCKET_SECONDS))))
        window = state.window
        window.add(now, decision in auto.rollback_decisions)
        return (window.total >= max(1, auto.min_requests)
                and window.matching * 100.0 > auto.threshold_pct * window.total)

    @staticmethod
    def _start_rollback(state: _PolicyState, auto: dsl.AutoRollback, policy_id: str,
                        now: float) -> None:
        window = state.window
        assert window is not None
        state.tripped = RevisionEventRequest(
            edit_type="auto_rollback", policy_id=policy_id, revision=state.revision, at=now,
            share_pct=100.0 * window.matching / window.total, matching=window.matching,
            total=window.total, reason="threshold_exceeded")
        state.events.append(state.tripped)
        state.rollback_until = now + auto.cooldown_minutes * 60.0
        # nothing is counted during the cooldown, so the stage returns with an empty window
        state.window = None

    @staticmethod
    def _follow_rollback(state: _PolicyState, shared: SharedRollback, policy_id: str,
                         now: float) -> None:
        state.tripped = RevisionEventRequest(
            edit_type="auto_rollback", policy_id=policy_id, revision=state.revision, at=now,
            share_pct=shared.share_pct, matching=shared.matching, total=shared.total,
            reason="threshold_exceeded")
        state.announce = shared.announce
        if shared.announce:
            state.events.append(state.tripped)
        state.rollback_until = shared.until
        state.window = None

    @staticmethod
    def _end_rollback(state: _PolicyState, policy_id: str, now: float, reason: str) -> None:
        tripped = state.tripped
        assert tripped is not None
        if state.announce:
            state.events.append(RevisionEventRequest(
                edit_type="rollback_end", policy_id=policy_id, revision=state.revision, at=now,
                share_pct=tripped.share_pct, matching=tripped.matching, total=tripped.total,
                reason=reason))
        state.rollback_until = None
        state.tripped = None
        state.announce = True

    @staticmethod
    def _outcome(mode: str, enforced: bool, decision: str, stage: dsl.Stage,
                 state: _PolicyState) -> RolloutOutcome:
        events = tuple(state.events)
        state.events.clear()
        return RolloutOutcome(rollout_mode=mode, enforced=enforced,
                              effective_decision=decision if enforced else "allow",
                              stage=str(stage), events=events)
