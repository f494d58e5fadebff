"""Auto-rollback windows summed in Redis (gateway/policy/rollout_state.py): two engines, as two
replicas hold them, trip one rollback together that neither would trip alone."""

from __future__ import annotations

from quota_stores import redis_link
from redis_server import RedisServer

import dsl
from gateway.policy.rollout import RolloutEngine
from gateway.policy.rollout_state import RedisRolloutState

SOURCE = """
policy v1 "spiky" {
  default allow
  rollout {
    otherwise enforced
    auto_rollback {
      enabled true
      threshold_pct 50
      min_requests 10
      window_minutes 1
      cooldown_minutes 1
      rollback_decisions refuse
    }
  }
}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_spike_split_over_two_replicas_trips_one_rollback(redis: RedisServer) -> None:
    policy = dsl.compile_policy(SOURCE)
    clock = Clock()
    wall = Clock()
    states = [RedisRolloutState(redis_link(redis), clock=wall, monotonic=clock)
              for _ in range(2)]
    engines = [RolloutEngine(state) for state in states]

    def resolve(engine: RolloutEngine, decision: str = "refuse") -> object:
        return engine.resolve(policy, target="t", quota_subject="u", decision=decision,
                              now=clock.now, rand=0.5, revision=1)

    outcomes = [resolve(engines[i % 2]) for i in range(10)]  # 5 each: neither trips alone
    assert {o.rollout_mode for o in outcomes} == {"enforced"}  # type: ignore[attr-defined]
    for state in states:
        await state.sync()
    for state in states:  # the second sync of the first one learns the rollback too
        await state.sync()
    # Both see it before their next request (a simulation's preview reads `status`).
    assert all(engine.status("spiky").rollback_until for engine in engines)  # type: ignore[union-attr]
    after = [resolve(engine, "allow") for engine in engines]
    assert [o.rollout_mode for o in after] == ["rollback", "rollback"]  # type: ignore[attr-defined]
    announced = [e for o in after for e in o.events]  # type: ignore[attr-defined]
    assert [e.edit_type for e in announced] == ["auto_rollback"]
    assert (announced[0].matching, announced[0].total) == (10, 10)

    clock.now += 61  # past the cooldown: the stages return, one end event
    wall.now += 61
    assert redis.command("FLUSHALL") == "OK"  # as Redis lets the rollback expire by then
    for state in states:
        await state.sync()
    ended = [resolve(engine, "allow") for engine in engines]
    assert [o.rollout_mode for o in ended] == ["enforced", "enforced"]  # type: ignore[attr-defined]
    assert [e.edit_type for o in ended for e in o.events] == [  # type: ignore[attr-defined]
        "rollback_end"]
    for state in states:
        await state.link.aclose()
