"""Checks of the declarations the gateway enforces itself: rollout stages, auto-rollback, quotas."""

from __future__ import annotations

from dsl import ast
from dsl.check_base import CheckerBase
from dsl.diagnostics import did_you_mean
from dsl.vocabulary import (
    QUOTA_SUBJECTS,
    QUOTA_UNITS,
    QUOTA_WINDOWS,
    ROLLBACK_NUMBERS,
    STAGE_MODES,
)


class DeclarationChecks(CheckerBase):
    def check_rollout(self, rollout: ast.RolloutDecl) -> None:
        targets: dict[str | None, ast.StageDecl] = {}
        for stage in rollout.stages:
            key = stage.target.value if stage.target else None
            first = targets.setdefault(key, stage)
            if first is not stage:
                what = f"target {key!r}" if key else "`otherwise`"
                self.err("stage-twice", stage.pos, f"{what} has two stages",
                         f"first given at line {first.pos.line}; keep one")
            self.check_stage(stage)
        seen: set[str] = set()
        for setting in rollout.auto_rollback or ():
            key = setting.key.text
            if key in seen:
                self.err("rollback-setting-twice", setting.pos, f"`{key}` is set twice",
                         "keep one")
            seen.add(key)
            self.check_rollback_setting(setting)

    def check_stage(self, stage: ast.StageDecl) -> None:
        mode = stage.mode.text
        if mode not in STAGE_MODES:
            self.err("unknown-stage", stage.mode.pos, f"unknown rollout stage `{mode}`",
                     did_you_mean(mode, STAGE_MODES))
        elif mode == "canary" and (stage.percentage is None or not 0 < stage.percentage <= 100):
            self.err("canary-percentage", stage.mode.pos,
                     "canary needs a percentage between 0 and 100", "e.g. `canary 10%`")
        elif mode != "canary" and stage.percentage is not None:
            self.err("percentage-not-allowed", stage.mode.pos, f"`{mode}` takes no percentage",
                     "only `canary` is sampled, e.g. `canary 10%`")

    def check_rollback_setting(self, setting: ast.RollbackSetting) -> None:
        key = setting.key.text
        if key == "enabled":
            if not isinstance(setting.value, bool):
                self.err("rollback-enabled-not-bool", setting.pos, "`enabled` is true or false",
                         "write `enabled true`")
        elif key == "rollback_decisions":
            for name in setting.value:  # type: ignore[union-attr]
                self.check_decision(name)  # type: ignore[arg-type]
        elif key not in ROLLBACK_NUMBERS:
            self.err("unknown-rollback-setting", setting.key.pos,
                     f"unknown auto_rollback setting `{key}`",
                     did_you_mean(key, (*ROLLBACK_NUMBERS, "enabled", "rollback_decisions")))
        else:
            number = float(setting.value)  # type: ignore[arg-type]
            if key == "threshold_pct" and not 0 <= number <= 100:
                self.err("rollback-threshold-range", setting.pos,
                         "threshold_pct is a percentage", "use 0..100")
            elif key != "threshold_pct" and (number < 1 or number != int(number)):
                self.err("rollback-not-whole", setting.pos,
                         f"`{key}` must be a whole number of at least 1",
                         "e.g. `window_minutes 10`")

    def check_quota(self, quota: ast.QuotaDecl) -> None:
        if quota.subject.text not in QUOTA_SUBJECTS:
            self.err("unknown-quota-subject", quota.subject.pos,
                     f"unknown quota subject `{quota.subject.text}`",
                     did_you_mean(quota.subject.text, QUOTA_SUBJECTS))
        seen: dict[tuple[str, str], ast.QuotaLimitDecl] = {}
        for limit in quota.limits:
            if limit.unit.text not in QUOTA_UNITS:
                self.err("unknown-quota-unit", limit.unit.pos,
                         f"unknown quota unit `{limit.unit.text}`",
                         did_you_mean(limit.unit.text, QUOTA_UNITS))
            if limit.window.text not in QUOTA_WINDOWS:
                self.err("unknown-quota-window", limit.window.pos,
                         f"unknown quota window `{limit.window.text}`",
                         did_you_mean(limit.window.text, QUOTA_WINDOWS))
            if limit.limit != int(limit.limit):
                self.err("quota-not-whole", limit.pos, "a quota limit is a whole number",
                         "e.g. `requests 100 per hour`")
            key = (limit.unit.text, QUOTA_WINDOWS.get(limit.window.text, limit.window.text))
            first = seen.setdefault(key, limit)
            if first is not limit:
                self.err("quota-limit-twice", limit.pos,
                         f"two `{key[0]}` limits per {limit.window.text}",
                         f"first given at line {first.pos.line}; keep one")
