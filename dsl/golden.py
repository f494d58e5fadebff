"""Golden cases: JSON request facts -> RequestFacts, the policy decides, `expect` is checked.

A policy `x.pol` (or `x.json`) keeps its cases in `x.cases.json` beside it:
`{"cases": [{"name": ..., <request facts> or "request": {...}, "expect": {...}}]}`.
Cases are checked strictly first (dsl/golden_schema.py), so a typo fails the case instead of
making it test nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dsl.classifiers import Classification, classify
from dsl.compiler import CompiledPolicy
from dsl.decision import Decision, RequestFacts
from dsl.golden_schema import CASE_KEYS, ROLLOUT_EXPECTATIONS, check_case, check_file
from dsl.rollout_outcome import MissingSample, resolve
from dsl.tools import tool_facts

_LIST_FIELDS = ("fired_rules", "triggered_categories", "allowlist_hits", "denylist_hits")
# Rules the compiler adds itself: the allowlist's refusal and the request's flagged categories.
PSEUDO_RULES = ("allowlist", "flagged_categories")


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_content_text(part.get("text") or part.get("content") or "")
                         if isinstance(part, dict) else str(part) for part in content)
    return ""


def facts_from_json(request: Mapping[str, Any]) -> RequestFacts:
    """Request facts from a small JSON object (see docs/policy-language.md, "Golden cases")."""
    messages = request.get("messages") or []
    texts = [(m.get("role", "user"), _content_text(m.get("content"))) for m in messages]
    system = "\n".join(t for role, t in texts if role in ("system", "developer"))
    users = [t for role, t in texts if role == "user"]
    text = request.get("text")
    input_text = request.get("input_text", "\n".join(t for _, t in texts) if texts else text or "")
    last_user = request.get("last_user_text", users[-1] if users else text or "")
    facts = RequestFacts(
        surface=request.get("surface", "chat.completions"),
        model=request.get("model", "gpt-4o-mini"),
        target=request.get("target"),
        policy_user=request.get("policy_user"),
        project_id=request.get("project_id"),
        message_count=int(request.get("message_count", len(messages) or 1)),
        estimated_input_tokens=int(request.get("estimated_input_tokens",
                                               request.get("input_tokens", len(input_text) // 4))),
        max_output_tokens=request.get("max_output_tokens"),
        has_tools=bool(request.get("has_tools", False)),
        stream=bool(request.get("stream", False)),
        input_text=input_text,
        last_user_text=last_user,
        system_text=request.get("system_text", system),
        flagged_categories=frozenset(request.get("flagged_categories", ())),
        tool_arguments_text=request.get("tool_arguments_text", ""),
        tool_result_text=request.get("tool_result", ""),
    )
    return _with_tool_call(facts, request)


def _with_tool_call(facts: RequestFacts, request: Mapping[str, Any]) -> RequestFacts:
    """The case's one tool call (`tool_name`, ...) filled in as the gateway fills it."""
    name = request.get("tool_name")
    if name is None:
        return facts
    arguments = request.get("tool_arguments", {})
    arguments_text = arguments if isinstance(arguments, str) else json.dumps(
        arguments, ensure_ascii=False, separators=(",", ":"))
    called = tool_facts(facts, name, request.get("tool_server"), arguments_text)
    if "input_text" in request or "text" in request or "messages" in request:
        called = replace(called, input_text=facts.input_text)  # the case's own input wins
    return called


def output_of(request: Mapping[str, Any]) -> str | None:
    """The answer a case gives: its `output`, or else its tool call's result."""
    found = request.get("output", request.get("tool_result"))
    return found if isinstance(found, str) else None


def classification_for(request: Mapping[str, Any], facts: RequestFacts) -> Classification:
    """The built-in classifier's view, with `category_scores` from the case pinned on top so a
    case tests the policy, not the classifier.  Pinned scores hold for every request text a rule
    reads (`input`, `last_user`, `system`); `output` is classified from the case's output."""
    return classify(facts.input_text).with_pinned(request.get("category_scores") or {})


def decide(policy: CompiledPolicy, request: Mapping[str, Any]) -> Decision:
    facts = facts_from_json(request)
    decision = policy.evaluate_input(facts, classification_for(request, facts))
    output = output_of(request)
    if output is not None and decision.decision not in ("refuse", "escalate"):
        decision = policy.evaluate_output(facts, output, decision)
    return decision


def request_of(case: Mapping[str, Any]) -> dict[str, Any]:
    """The request facts of a case: its `request` object, or the facts written inline."""
    inline = {k: v for k, v in case.items() if k not in CASE_KEYS}
    request = case.get("request")
    return {**inline, **(request if isinstance(request, dict) else {})}


def _actual(policy: CompiledPolicy, decision: Decision, expect: Mapping[str, Any],
            request: Mapping[str, Any]) -> dict[str, Any]:
    actual: dict[str, Any] = decision.summary()
    actual["decided_at"] = actual["stage"]
    actual["redactions"] = actual["redacted_spans"]
    actual["instruction"] = decision.obligations.instruction
    actual["message"] = decision.obligations.message
    actual["escalation_path"] = decision.obligations.escalation_path
    if "redacted_text" in expect:
        redactor = decision.obligations.redactor
        source = output_of(request) if decision.stage == "output" else (
            facts_from_json(request).input_text)
        actual["redacted_text"] = redactor.apply(source or "")[0] if redactor else source
    if "error" in expect:
        actual["error"] = (decision.error is not None if isinstance(expect["error"], bool)
                           else decision.error)
    if any(key in expect for key in ROLLOUT_EXPECTATIONS):
        facts = facts_from_json(request)
        outcome = resolve(policy.rollout, policy_id=policy.policy_id,
                          target=facts.effective_target, subject=facts.policy_user,
                          decision=decision.decision, revision=int(request.get("revision", 1)),
                          sample=request.get("sample"))
        actual.update(rollout_mode=outcome.rollout_mode, enforced=outcome.enforced,
                      effective_decision=outcome.effective_decision,
                      rollout_stage=outcome.rollout_stage)
    return actual


def mismatches(policy: CompiledPolicy, decision: Decision, expect: Mapping[str, Any],
               request: Mapping[str, Any]) -> list[str]:
    """Each expectation the decision does not meet (the case was checked before)."""
    problems = []
    actual = _actual(policy, decision, expect, request)
    for key, wanted in expect.items():
        got = actual[key]
        if key in _LIST_FIELDS:
            got, wanted = sorted(got), sorted(wanted)
        if got != wanted:
            problems.append(f"{key}: expected {wanted!r}, got {got!r}")
    return problems


@dataclass(frozen=True)
class CaseResult:
    name: str
    problems: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    fired: frozenset[str] = field(default_factory=frozenset)

    @property
    def passed(self) -> bool:
        return not self.problems


def run_case(policy: CompiledPolicy, case: Any, name: str) -> CaseResult:
    rule_ids = (*(r.rule_id for r in policy.rules), *PSEUDO_RULES)
    report = check_case(case, rule_ids)
    if report.problems:
        return CaseResult(name, tuple(report.problems), tuple(report.warnings))
    request = request_of(case)
    try:
        decision = decide(policy, request)
        problems = mismatches(policy, decision, case["expect"], request)
    except MissingSample as error:
        return CaseResult(name, (str(error),), tuple(report.warnings))
    except Exception as error:  # a broken case is a failed case, not a crash of the run
        return CaseResult(name, (f"{type(error).__name__}: {error}",), tuple(report.warnings))
    return CaseResult(name, tuple(problems), tuple(report.warnings),
                      frozenset(decision.fired_rules))


def run_cases(policy: CompiledPolicy, cases: list[Any]) -> list[CaseResult]:
    results = []
    for index, case in enumerate(cases):
        name = str(case.get("name", f"case {index + 1}")) if isinstance(case, dict) else (
            f"case {index + 1}")
        results.append(run_case(policy, case, name))
    return results


def load_cases(doc: Any) -> tuple[list[Any], list[str]]:
    """The cases of a parsed cases file, and what is wrong with the file itself."""
    problems = check_file(doc)
    cases = doc.get("cases") if isinstance(doc, dict) else None
    return (cases if isinstance(cases, list) else []), problems


def uncovered_rules(policy: CompiledPolicy, results: list[CaseResult]) -> list[str]:
    """The policy's rules that no case fired, in policy order."""
    fired = frozenset().union(*(r.fired for r in results))
    return [r.rule_id for r in policy.rules if r.rule_id not in fired]


def cases_path(policy_path: Path) -> Path:
    return policy_path.with_name(policy_path.name.rsplit(".", 1)[0] + ".cases.json")
