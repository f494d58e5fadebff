"""Policy-level declarations the gateway enforces itself: rollout (docs/policy-language.md) and
quotas (docs/quotas.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from dsl import ast
from dsl.vocabulary import QUOTA_WINDOWS


@dataclass(frozen=True)
class Stage:
    mode: str  # "shadow" | "canary" | "enforced"
    percentage: float = 100.0  # canary only: share of requests enforced

    def __str__(self) -> str:
        return f"canary {self.percentage:g}%" if self.mode == "canary" else self.mode


@dataclass(frozen=True)
class AutoRollback:
    enabled: bool = True
    threshold_pct: float = 50.0
    min_requests: int = 20
    window_minutes: int = 10
    cooldown_minutes: int = 30
    rollback_decisions: tuple[str, ...] = ("refuse",)


@dataclass(frozen=True)
class Rollout:
    """Stages per target; `default` applies to every target not listed."""

    default: Stage = Stage("enforced")
    targets: Mapping[str, Stage] = field(default_factory=lambda: MappingProxyType({}))
    auto_rollback: AutoRollback | None = None

    def stage_for(self, target: str) -> Stage:
        return self.targets.get(target, self.default)


@dataclass(frozen=True)
class QuotaLimit:
    unit: str  # "requests" | "tokens"
    window: str  # "minute" | "hour" | "daily" | "weekly" | "monthly"
    limit: int  # 0 = unlimited


@dataclass(frozen=True)
class Quotas:
    project: tuple[QuotaLimit, ...] = ()
    user: tuple[QuotaLimit, ...] = ()


def rollout_from_ast(decls: list[ast.RolloutDecl]) -> Rollout:
    if not decls:
        return Rollout()
    decl = decls[0]
    default = Stage("enforced")
    targets: dict[str, Stage] = {}
    for stage_decl in decl.stages:
        stage = Stage(stage_decl.mode.text,
                      stage_decl.percentage if stage_decl.mode.text == "canary"
                      and stage_decl.percentage is not None else 100.0)
        if stage_decl.target is None:
            default = stage
        else:
            targets.setdefault(stage_decl.target.value, stage)
    auto = None
    if decl.auto_rollback is not None:
        values: dict[str, object] = {}
        for setting in decl.auto_rollback:
            if setting.key.text == "rollback_decisions":
                values["rollback_decisions"] = tuple(
                    n.text for n in setting.value)  # type: ignore[union-attr]
            elif setting.key.text == "enabled":
                values["enabled"] = bool(setting.value)
            elif setting.key.text == "threshold_pct":
                values["threshold_pct"] = float(setting.value)  # type: ignore[arg-type]
            else:
                values[setting.key.text] = int(setting.value)  # type: ignore[arg-type]
        auto = AutoRollback(**values)  # type: ignore[arg-type]
    return Rollout(default, MappingProxyType(targets), auto)


def quotas_from_ast(decls: list[ast.QuotaDecl]) -> Quotas:
    by_subject: dict[str, list[QuotaLimit]] = {"project": [], "user": []}
    for decl in decls:
        for limit in decl.limits:
            by_subject.setdefault(decl.subject.text, []).append(QuotaLimit(
                limit.unit.text, QUOTA_WINDOWS[limit.window.text], int(limit.limit)))
    return Quotas(tuple(by_subject["project"]), tuple(by_subject["user"]))
