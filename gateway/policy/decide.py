"""The one decision path, pure: facts from a request, decisions from policies, obligations applied.

`/policy/*`, the `/v1` inline policy, the simulate API and the simulate command all call these
functions, so a request is decided the same way wherever it is asked about.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable
from typing import Any

import dsl
from dsl.decision import CATEGORY_SURFACES
from gateway.adapters.base import JSON, Adapter
from gateway.policy.governance import combine
from gateway.policy.monitors import WholeBlockMonitor

MonitorFactory = Callable[[dsl.Decision], Any]


def request_facts(adapter: Adapter, body: JSON, *, target: str | None = None,
                  policy_user: str | None = None, project_id: str | None = None,
                  flagged_categories: frozenset[str] = frozenset()) -> dsl.RequestFacts:
    """What a policy may know about a request body of `adapter`'s API."""
    view = adapter.input_view(body)
    return dsl.RequestFacts(
        surface=adapter.surface, model=str(body.get("model", "")), target=target,
        policy_user=policy_user, project_id=project_id, message_count=view.message_count,
        estimated_input_tokens=view.estimated_input_tokens,
        max_output_tokens=view.max_output_tokens, has_tools=view.has_tools,
        stream=adapter.is_stream(body), input_text=view.input_text,
        last_user_text=view.last_user_text, system_text=view.system_text,
        tool_arguments_text=view.tool_arguments_text,
        flagged_categories=flagged_categories)


def input_decisions(policies: Iterable[dsl.CompiledPolicy], facts: dsl.RequestFacts,
                    classification: Any) -> list[dsl.Decision]:
    """Each policy's own input decision, the governing policy's first."""
    return [policy.evaluate_input(facts, classification) for policy in policies]


def combined(decisions: list[dsl.Decision], base: dsl.Decision | None = None) -> dsl.Decision:
    """The most severe of `decisions` (ties keep the earlier), with the hits and redactions of
    all: a caller's inline policy can only tighten a project's governance."""
    decision, rest = (base, decisions) if base is not None else (decisions[0], decisions[1:])
    for other in rest:
        decision = combine(decision, other)
    return decision


def decide_input(policies: Iterable[dsl.CompiledPolicy], facts: dsl.RequestFacts,
                 classification: Any) -> dsl.Decision:
    """The input decision of the governing policy, tightened by any further policy."""
    return combined(input_decisions(policies, facts, classification))


def output_decisions(policies: Iterable[dsl.CompiledPolicy], facts: dsl.RequestFacts, text: str,
                     decision: dsl.Decision, classification: Any = None) -> list[dsl.Decision]:
    """Each policy's decision once its output rules read the whole output `text`
    (`classification`: the output's, when an external classifier made it)."""
    return [policy.evaluate_output(facts, text, decision, classification)
            for policy in policies]


def decide_output(policies: Iterable[dsl.CompiledPolicy], facts: dsl.RequestFacts, text: str,
                  decision: dsl.Decision, classification: Any = None) -> dsl.Decision:
    """`decision` after every policy's output rules read the whole output `text`;
    `classification` may carry the output's, made by an external classifier."""
    return combined(output_decisions(policies, facts, text, decision, classification),
                    base=decision)


def moderation_blocked(always_blocked: Collection[str], classification: Any,
                       facts: dsl.RequestFacts) -> list[str]:
    """Always-blocked categories (every surface) and the request's own flagged ones (category
    surfaces only). Not subject to rollout."""
    flagged = facts.flagged_categories if facts.surface in CATEGORY_SURFACES else frozenset()
    if not always_blocked and not flagged:
        return []
    return [c for c in classification.triggered() if c in always_blocked or c in flagged]


def refusal(decision: dsl.Decision, reason: str, categories: list[str]) -> dsl.Decision:
    """`decision` turned into a refusal for `reason`, naming `categories` among its triggers."""
    triggered = tuple(dict.fromkeys((*decision.triggered_categories, *categories)))
    return dataclasses.replace(decision, decision="refuse", reason_code=reason,
                               triggered_categories=triggered)


def apply_input_obligations(adapter: Adapter, body: JSON, decision: dsl.Decision) -> JSON:
    """The body to forward for an enforced `decision`: redacted, with the rewrite or summary
    instruction added in the API's own place. `body` itself when nothing changes."""
    redactor = decision.obligations.redactor
    if redactor is not None:
        body = adapter.map_input_texts(body, lambda text: redactor.apply(text)[0])
    if decision.decision in ("rewrite", "summary") and decision.obligations.instruction:
        body = adapter.with_instruction(body, decision.obligations.instruction)
    return body


def output_monitor_factory(policies: list[dsl.CompiledPolicy], facts: dsl.RequestFacts,
                           enforced: bool) -> MonitorFactory | None:
    """What watches a stream's output text: the policy's own incremental monitor, or, when two
    policies have output rules, one that holds each text block whole (see WholeBlockMonitor)."""
    with_rules = [p for p in policies if p.has_output_rules]
    if not with_rules:
        return None
    if len(with_rules) == 1:
        policy = with_rules[0]
        return lambda decision: policy.output_monitor(facts, decision, enforced)
    return lambda decision: WholeBlockMonitor(with_rules, facts, decision, enforced)
