"""One stage's `Outcome` (rules fired, evaluation errors, allowlist hits) combined with the
earlier stage's `Decision` into the stage's `Decision`: the most severe vote wins, ties go to
the lowest rule id, and the obligations (message, instruction, redaction) come from the winners.
Shared by the compiler (whole texts) and the output monitor (a stream's windows)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from dsl.decision import SEVERITY, Decision, Obligations, Redactor
from dsl.outcome import CompiledRule, Outcome

#: (rule id, decision, reason, message, instruction); "" sorts first: the earlier stage keeps
#: its reason and message when an output rule only ties with it.
Vote = tuple[str, str, str | None, str | None, str | None]
Fired = list[tuple[CompiledRule, list[tuple[str, Any]]]]


@dataclass(frozen=True, slots=True)
class PolicyVoice:
    """What a policy adds to every stage's votes: its default and `on_error` decisions, its
    texts (refusal and escalation messages, rewrite and summary instructions) and its
    escalation path."""

    default: str
    on_error: str
    texts: Mapping[str, str | None]
    escalation_path: str | None


def combine(policy: PolicyVoice, outcome: Outcome, stage: str, text: str,
            base: Decision | None, count_redactions: bool = True) -> Decision:
    fired = sorted(outcome.fired, key=lambda pair: pair[0].rule_id)
    votes = _votes(policy, outcome, fired, base)
    winner = max(SEVERITY[v[1]] for v in votes)
    winners = sorted(v for v in votes if SEVERITY[v[1]] == winner)
    decision = winners[0][1]
    reason = next((v[2] for v in winners if v[2]), decision.upper())
    redactor = _merged_redactor(fired)
    spans: dict[str, int] = dict(base.redacted_spans) if base else {}
    if redactor is not None and count_redactions:
        for kind, count in redactor.apply(text)[1].items():
            spans[kind] = spans.get(kind, 0) + count
    categories, allow_hits, deny_hits = _evidence(outcome, fired, base)
    errors = [f"rule `{rule_id}`: {message}" for rule_id, message in outcome.errors]
    if base is not None and base.error:
        errors.insert(0, base.error)
    return Decision(
        decision=decision, reason_code=reason, stage=stage,  # type: ignore[arg-type]
        fired_rules=tuple(sorted(set(base.fired_rules if base else ()) | {
            r.rule_id for r, _ in fired})),
        triggered_categories=tuple(dict.fromkeys(categories)),
        allowlist_hits=tuple(dict.fromkeys(allow_hits)),
        denylist_hits=tuple(dict.fromkeys(deny_hits)),
        redacted_spans=MappingProxyType(spans),
        error="; ".join(errors) or None,
        obligations=Obligations(
            redactor=redactor, instruction=_instruction(policy, decision, votes),
            message=_message(policy, decision, winners),
            escalation_path=policy.escalation_path if decision == "escalate" else None),
    )


def _votes(policy: PolicyVoice, outcome: Outcome, fired: Fired,
           base: Decision | None) -> list[Vote]:
    votes: list[Vote] = [(r.rule_id, r.decision, r.reason, r.message, r.instruction)
                         for r, _ in fired]
    if outcome.errors:
        votes.append(("~on_error", policy.on_error, None, None, None))
    if base is not None:
        votes.append(("", base.decision, base.reason_code, base.obligations.message,
                      base.obligations.instruction))
    elif not fired:
        votes.append(("~default", policy.default, None, None, None))
    return votes


def _message(policy: PolicyVoice, decision: str, winners: list[Vote]) -> str | None:
    if decision not in ("refuse", "escalate"):
        return None
    policy_text = policy.texts["refusal_message" if decision == "refuse"
                               else "escalation_message"]
    return next((v[3] for v in winners if v[3]), policy_text)


def _instruction(policy: PolicyVoice, decision: str, votes: list[Vote]) -> str | None:
    """Every rewrite (and, for a summary, every summary and rewrite) instruction, once each:
    a summary still honours what the rewrites asked for."""
    if decision not in ("rewrite", "summary"):
        return None
    wanted = [v for v in sorted(votes) if v[1] == decision] + [
        v for v in sorted(votes) if v[1] == "rewrite" and decision == "summary"]
    parts = [v[4] or policy.texts[f"{v[1]}_instruction"] for v in wanted]
    return "\n".join(dict.fromkeys(p for p in parts if p)) or None


def _merged_redactor(fired: Fired) -> Redactor | None:
    redactor: Redactor | None = None
    for rule, _ in fired:
        if rule.redactor is not None:
            redactor = rule.redactor if redactor is None else redactor.merged_with(rule.redactor)
    return redactor


def _evidence(outcome: Outcome, fired: Fired, base: Decision | None
              ) -> tuple[list[str], list[str], list[str]]:
    """The categories, allowlist hits and denylist hits behind the decision, the earlier
    stage's first."""
    allow_hits = list(base.allowlist_hits) if base else []
    deny_hits = list(base.denylist_hits) if base else []
    categories = list(base.triggered_categories) if base else []
    allow_hits.extend(outcome.allowlist_hits)
    for _, evidence in fired:
        for tag, value in evidence:
            if tag == "category":
                categories.append(value)
            else:
                (allow_hits if tag == "allow" else deny_hits).extend(value)
    return categories, allow_hits, deny_hits
