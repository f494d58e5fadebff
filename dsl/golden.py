"""Golden request files: JSON request facts -> RequestFacts, and `expect` blocks checked.

A policy `x.pol` (or `x.json`) keeps its cases in `x.cases.json` beside it:
`{"cases": [{"name": ..., <request facts>, "output": "...", "expect": {...}}]}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsl.classifiers import Classification, classify
from dsl.compiler import CompiledPolicy
from dsl.decision import Decision, RequestFacts

_LIST_FIELDS = ("fired_rules", "triggered_categories", "allowlist_hits", "denylist_hits")


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
    return RequestFacts(
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
    )


def classification_for(request: Mapping[str, Any], facts: RequestFacts) -> Classification:
    """The built-in classifier's view, with `category_scores` from the case pinned on top so a
    case tests the policy, not the classifier."""
    found = classify(facts.input_text)
    pinned = request.get("category_scores")
    if not pinned:
        return found
    return Classification(categories={**found.categories, **pinned}, pii=found.pii)


def decide(policy: CompiledPolicy, request: Mapping[str, Any]) -> Decision:
    facts = facts_from_json(request)
    decision = policy.evaluate_input(facts, classification_for(request, facts))
    if "output" in request and decision.decision not in ("refuse", "escalate"):
        decision = policy.evaluate_output(facts, request["output"], decision)
    return decision


def mismatches(decision: Decision, expect: Mapping[str, Any], request: Mapping[str, Any],
               ) -> list[str]:
    problems = []
    actual: dict[str, Any] = decision.summary()
    actual["redactions"] = actual["redacted_spans"]
    actual["instruction"] = decision.obligations.instruction
    actual["message"] = decision.obligations.message
    actual["escalation_path"] = decision.obligations.escalation_path
    for key, wanted in expect.items():
        if key == "redacted_text":
            redactor = decision.obligations.redactor
            source = request.get("output") if decision.stage == "output" else (
                facts_from_json(request).input_text)
            got: Any = redactor.apply(source or "")[0] if redactor else source
        elif key == "error":
            got = decision.error is not None if isinstance(wanted, bool) else decision.error
        elif key not in actual:
            problems.append(f"unknown expectation `{key}`")
            continue
        else:
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

    @property
    def passed(self) -> bool:
        return not self.problems


def run_cases(policy: CompiledPolicy, cases: list[Mapping[str, Any]]) -> list[CaseResult]:
    results = []
    for index, case in enumerate(cases):
        name = str(case.get("name", f"case {index + 1}"))
        try:
            problems = mismatches(decide(policy, case), case.get("expect", {}), case)
            if "expect" not in case:
                problems.append("case has no `expect`")
        except Exception as error:  # a broken case is a failed case, not a crash of the run
            problems = [f"{type(error).__name__}: {error}"]
        results.append(CaseResult(name, tuple(problems)))
    return results


def cases_path(policy_path: Path) -> Path:
    return policy_path.with_name(policy_path.name.rsplit(".", 1)[0] + ".cases.json")
