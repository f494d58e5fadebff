"""The rollout outcome of one request, as a fresh gateway worker would resolve it
(docs/policy-language.md).

Pure and stateless: golden cases use it to assert what the rollout does with a decision for a
given target and user.  It follows the gateway's rollout engine step for step (same stages, same
sticky sample) but holds no auto-rollback window beyond the one request: a case describes a
request arriving at a worker that has seen no other traffic for the policy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from dsl.declarations import Rollout

ROLLOUT_MODES = ("shadow", "canary", "enforced", "rollback")
_HASH_SPACE = float(1 << 64)


@dataclass(frozen=True)
class RolloutResolution:
    rollout_mode: str  # "shadow" | "canary" | "enforced" | "rollback"
    enforced: bool
    effective_decision: str  # the decision acted on: "allow" whenever not enforced
    rollout_stage: str  # the configured stage of the target, e.g. "canary 10%"


class MissingSample(ValueError):
    """A canary target without a user cannot be sampled; the case must give `sample`."""


def sticky_sample(policy_id: str, revision: int, subject: str) -> float:
    """The gateway's stable sample in [0, 1) for a user and policy revision."""
    digest = hashlib.blake2b(f"{policy_id}:{revision}:{subject}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SPACE


def resolve(rollout: Rollout, *, policy_id: str, target: str, subject: str | None,
            decision: str, revision: int = 1, sample: float | None = None) -> RolloutResolution:
    """What the rollout does with `decision` for this target and user (`subject`).

    `sample` stands in for the random draw the gateway makes for a canary request without a
    user; with a user the sticky sample decides, as in the gateway.
    """
    stage = rollout.stage_for(target)

    def outcome(mode: str, enforced: bool) -> RolloutResolution:
        return RolloutResolution(mode, enforced, decision if enforced else "allow", str(stage))

    if stage.mode == "shadow":
        return outcome("shadow", False)
    auto = rollout.auto_rollback
    if auto is not None and auto.enabled and max(1, auto.min_requests) <= 1 and (
            decision in auto.rollback_decisions and 100.0 > auto.threshold_pct):
        return outcome("rollback", False)
    if stage.mode == "canary":
        if subject:
            drawn = sticky_sample(policy_id, revision, subject)
        elif sample is not None:
            drawn = sample
        else:
            raise MissingSample(f"target {target!r} is a canary: give `policy_user` (sticky "
                                "sample) or `sample` (0..1) to decide whether it is enforced")
        return outcome("canary", drawn < stage.percentage / 100.0)
    return outcome("enforced", True)
