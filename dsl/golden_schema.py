"""What a golden case may say, checked strictly so that a case can never pass vacuously.

Unknown keys (with "did you mean"), unknown categories, PII kinds, decisions and rule names, and
values of the wrong type are problems of the case; a deprecated key is a warning.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from dsl.classifiers import CATEGORIES, PII_KINDS
from dsl.decision import DECISIONS, SURFACES
from dsl.rollout_outcome import ROLLOUT_MODES

# Request facts, at the top of a case or in its `request` object (also what `dsl eval` reads).
REQUEST_KEYS: dict[str, str] = {
    "surface": "string", "model": "string", "target": "string", "policy_user": "string",
    "project_id": "string", "message_count": "int", "estimated_input_tokens": "int",
    "input_tokens": "int", "max_output_tokens": "int", "has_tools": "bool", "stream": "bool",
    "text": "string", "messages": "list", "input_text": "string", "last_user_text": "string",
    "system_text": "string", "flagged_categories": "list", "category_scores": "object",
    "output": "string", "revision": "int", "sample": "number",
    # The one tool call decided (dsl/tools.py): arguments as an object (read as its JSON text,
    # as the gateway does) or a string; the result stands for `output` when that is not given.
    "tool_name": "string", "tool_server": "string", "tool_arguments": "any",
    "tool_result": "string",
}
#: `surface` values a case may give: the model APIs, and MCP tool calls.
CASE_SURFACES = (*SURFACES, "mcp")
CASE_KEYS = ("name", "description", "request", "expect")
EXPECT_KEYS: dict[str, str] = {
    "decision": "string", "reason_code": "string", "decided_at": "string", "stage": "string",
    "fired_rules": "list", "triggered_categories": "list", "allowlist_hits": "list",
    "denylist_hits": "list", "redactions": "object", "redacted_spans": "object",
    "redacted_text": "string", "instruction": "any", "message": "any",
    "escalation_path": "any", "error": "any", "rollout_mode": "string", "enforced": "bool",
    "effective_decision": "string", "rollout_stage": "string",
}
ROLLOUT_EXPECTATIONS = ("rollout_mode", "enforced", "effective_decision", "rollout_stage")
FILE_KEYS = ("cases", "description")
ROLES = ("system", "developer", "user", "assistant", "tool")
_TYPES: dict[str, Any] = {"string": str, "int": int, "number": (int, float), "bool": bool,
                          "list": list, "object": dict}


@dataclass
class CaseReport:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def unknown(name: str, allowed: Collection[str], where: str) -> str:
    close = difflib.get_close_matches(name, sorted(allowed), n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`?" if close else (
        "known: " + ", ".join(f"`{a}`" for a in sorted(allowed)))
    return f"unknown {where} `{name}`; {hint}"


def _typed(report: CaseReport, where: str, values: Mapping[str, Any],
           kinds: Mapping[str, str]) -> None:
    for key, value in values.items():
        kind = kinds.get(key, "any")
        wanted = _TYPES.get(kind)
        if wanted is None or (value is None and kind != "bool"):
            continue
        bad_bool = isinstance(value, bool) and kind in ("int", "number")
        if bad_bool or not isinstance(value, wanted):
            report.problems.append(f"`{where}{key}` must be a{'n' if kind[0] in 'aeiou' else ''} "
                                   f"{kind}, got {type(value).__name__}")


def check_file(doc: Any) -> list[str]:
    """Problems of a whole cases file (its own shape, not its cases)."""
    if not isinstance(doc, dict):
        return ['a cases file is an object: {"cases": [...]}']
    problems = [unknown(k, FILE_KEYS, "key") + " (in the cases file)" for k in doc
                if k not in FILE_KEYS]
    if not isinstance(doc.get("cases"), list):
        problems.append('a cases file has a list of cases: {"cases": [...]}')
    return problems


def check_case(case: Any, rule_ids: Collection[str]) -> CaseReport:
    """Everything wrong with one case; `rule_ids` are the rules `fired_rules` may name."""
    report = CaseReport()
    if not isinstance(case, dict):
        report.problems.append("a case is an object")
        return report
    inline = {k: v for k, v in case.items() if k not in CASE_KEYS}
    for key in inline:
        if key not in REQUEST_KEYS:
            report.problems.append(unknown(key, (*CASE_KEYS, *REQUEST_KEYS), "key") + " (case)")
    request = case.get("request", {})
    if not isinstance(request, dict):
        report.problems.append("`request` must be an object of request facts")
        request = {}
    elif request and any(k in REQUEST_KEYS for k in inline):
        report.problems.append("request facts are both in `request` and at the top of the case; "
                               "keep them in one place")
    for key in request:
        if key not in REQUEST_KEYS:
            report.problems.append(unknown(key, REQUEST_KEYS, "key") + " in `request`")
    facts = {k: v for k, v in (inline | request).items() if k in REQUEST_KEYS}
    _typed(report, "", facts, REQUEST_KEYS)
    _check_facts(report, facts)
    expect = case.get("expect")
    if expect is None:
        report.problems.append("case has no `expect`")
    elif not isinstance(expect, dict):
        report.problems.append("`expect` must be an object")
    else:
        _check_expect(report, expect, rule_ids)
    return report


def _check_facts(report: CaseReport, facts: Mapping[str, Any]) -> None:
    scores = facts.get("category_scores")
    for name, score in (scores.items() if isinstance(scores, dict) else ()):
        if name not in CATEGORIES:
            report.problems.append(unknown(name, CATEGORIES, "category") + " in `category_scores`")
        elif isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            report.problems.append(f"score of {name!r} must be a number from 0 to 1")
    for name in facts.get("flagged_categories") or ():
        if name not in CATEGORIES:
            report.problems.append(unknown(str(name), CATEGORIES, "category")
                                   + " in `flagged_categories`")
    if facts.get("surface") is not None and facts["surface"] not in CASE_SURFACES:
        report.problems.append(unknown(str(facts["surface"]), CASE_SURFACES, "surface"))
    arguments = facts.get("tool_arguments")
    if arguments is not None and not isinstance(arguments, dict | str):
        report.problems.append("`tool_arguments` must be an object or a string")
    if "tool_name" not in facts and any(k in facts for k in ("tool_server", "tool_arguments")):
        report.problems.append("`tool_server` and `tool_arguments` need the call's `tool_name`")
    sample = facts.get("sample")
    if isinstance(sample, int | float) and not 0 <= sample < 1:
        report.problems.append("`sample` is a number from 0 (inclusive) to 1 (exclusive)")
    for index, message in enumerate(facts.get("messages") or ()):
        where = f"`messages[{index}]`"
        if not isinstance(message, dict):
            report.problems.append(f"{where} must be an object with `role` and `content`")
            continue
        for key in message:
            if key not in ("role", "content", "name"):
                report.problems.append(unknown(key, ("role", "content", "name"), "key")
                                       + f" in {where}")
        if message.get("role", "user") not in ROLES:
            report.problems.append(unknown(str(message.get("role")), ROLES, "role") + f" in {where}")


def _check_expect(report: CaseReport, expect: Mapping[str, Any],
                  rule_ids: Collection[str]) -> None:
    for key in expect:
        if key not in EXPECT_KEYS:
            report.problems.append(unknown(key, EXPECT_KEYS, "expectation") + " in `expect`")
    _typed(report, "expect.", {k: v for k, v in expect.items() if k in EXPECT_KEYS}, EXPECT_KEYS)
    if "stage" in expect:
        report.warnings.append("`expect.stage` is deprecated: write `expect.decided_at` (the input "
                               "or output stage that decided); the rollout stage is "
                               "`expect.rollout_mode`")
        if "decided_at" in expect:
            report.problems.append("`expect.stage` and `expect.decided_at` are the same; keep "
                                   "`decided_at`")
    choices = {"decision": DECISIONS, "effective_decision": DECISIONS,
               "decided_at": ("input", "output"), "stage": ("input", "output"),
               "rollout_mode": ROLLOUT_MODES}
    for key, allowed in choices.items():
        value = expect.get(key)
        if isinstance(value, str) and value not in allowed:
            report.problems.append(unknown(value, allowed, f"`expect.{key}` value"))
    for name in _strings(expect.get("triggered_categories")):
        if name not in CATEGORIES:
            report.problems.append(unknown(name, CATEGORIES, "category")
                                   + " in `expect.triggered_categories`")
    for key in ("redactions", "redacted_spans"):
        spans = expect.get(key)
        for kind in (spans if isinstance(spans, dict) else ()):
            if kind not in (*PII_KINDS, "term"):
                report.problems.append(unknown(kind, (*PII_KINDS, "term"), "PII kind")
                                       + f" in `expect.{key}`")
    for name in _strings(expect.get("fired_rules")):
        if name not in rule_ids:
            report.problems.append(unknown(name, rule_ids, "rule") + " in `expect.fired_rules`")


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []
