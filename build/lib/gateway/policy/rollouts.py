"""The worker's rollouts: which decisions are enforced, and the revision events rollbacks record.

`RolloutEngine` (gateway/policy/rollout.py) is the sans-I/O arithmetic of stages, canaries and
auto-rollback windows; `Rollouts` wires it to the clock, the event sink, and the revision
history that names an older revision whose rollback ends.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

import dsl
from gateway.policy.records import revision_event
from gateway.policy.rollout import RolloutEngine, canary_enforces

if TYPE_CHECKING:
    from gateway.admin.registry import LoadedPolicy, PolicyRevision

#: The stored revision `revision` of a policy, when it is still in the history.
OldRevision = Callable[[str, int], "PolicyRevision | None"]


class Rollouts:
    def __init__(self, emit: Callable[[dict[str, Any]], None], old_revision: OldRevision,
                 engine: RolloutEngine | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        self._emit = emit
        self.engine = engine or RolloutEngine()
        self._old_revision = old_revision
        self._rand = rand

    def resolve(self, loaded: LoadedPolicy, target: str, subject: str | None,
                decision: dsl.Decision) -> tuple[str, bool]:
        """(rollout_mode, enforced) for this request; counts it toward auto-rollback and
        records the revision events of rollbacks that start or end."""
        outcome = self.engine.resolve(
            loaded.policy, policy_id=loaded.policy_id, revision=loaded.revision, target=target,
            quota_subject=subject, decision=decision.decision, now=trio.current_time(),
            rand=self._rand())
        for change in outcome.events:
            name, classification, source = loaded.name, loaded.policy.classification, \
                loaded.source
            if change.revision != loaded.revision:
                # The end of an older revision's rollback (a new one replaced it): the event
                # describes that revision, so its snapshot is that revision's source. Rare.
                old = self._old_revision(change.policy_id, change.revision)
                if old is not None:
                    name, classification, source = old.name, old.classification, old.source
            self._emit(revision_event(
                policy_id=change.policy_id, revision=change.revision, name=name,
                classification=classification, edit_type=change.edit_type, source=source,
                reason=change.reason, window={"share_pct": change.share_pct,
                                              "matching": change.matching,
                                              "total": change.total}))
        return outcome.rollout_mode, outcome.enforced

    def preview(self, loaded: LoadedPolicy, target: str, subject: str | None,
                decision: dsl.Decision | None = None) -> tuple[str, bool]:
        """(rollout_mode, enforced) a request would get now, without counting toward
        auto-rollback: a simulation is not a governed request, and simulating refusals must
        never switch off a policy's enforcement for real traffic."""
        status = self.engine.status(loaded.policy_id)
        if (status is not None and status.revision == loaded.revision
                and status.rollback_until is not None
                and trio.current_time() < status.rollback_until):
            return "rollback", False
        stage = loaded.policy.rollout.stage_for(target)
        if stage.mode == "shadow":
            return "shadow", False
        if stage.mode == "canary":
            return "canary", canary_enforces(stage.percentage, loaded.policy_id,
                                             loaded.revision, subject, self._rand())
        return "enforced", True
