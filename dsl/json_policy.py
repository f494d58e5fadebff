"""JSON policy documents, current and legacy shapes -> the same AST as `.pol`.

Positions point at the JSON key a node came from (when the document was given as text), so
checker diagnostics on JSON documents still carry a useful line and column.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection
from typing import Any

from dsl import ast
from dsl.diagnostics import DiagnosticSink

_ACTIONS = {"rewrite": "rewrite", "block": "refuse", "refuse": "refuse", "summarize": "summary",
            "summary": "summary", "escalate": "escalate"}

# The keys of each object of the two document shapes (docs/policy-language.md); anything else is a
# typo or a field this version does not understand, and is reported rather than ignored.
_TOP = {"name", "description", "owner", "policy_id", "id"}
_CURRENT_KEYS = {
    "": _TOP | {"classification", "config"},
    "config": {"rules", "deployment"},
    "rules": {"allowlist", "denylist", "flagged_categories", "enforcement_action",
              "escalation_path", "redact_pii", "rewrite_instruction", "summary_instruction"},
    "deployment": {"enabled", "percentage", "auto_rollback"},
    "auto_rollback": {"enabled", "threshold_pct", "min_requests", "window_minutes",
                      "cooldown_minutes", "rollback_decisions"},
}
_LEGACY_KEYS = {
    "": _TOP | {"rules", "org_controls", "rollout", "refusal_replacement"},
    "rules": {"allowlist", "denylist", "redact", "response_pattern", "rewrite_instead_of_refuse",
              "reason_codes", "flagged_categories"},
    "org_controls": {"data_classification", "user_quota", "project_quota"},
    "rollout": {"shadow", "canary", "rollback_on_spike", "rollback_threshold", "min_requests",
                "window_minutes", "cooldown_minutes", "rollback_decisions"},
    "refusal_replacement": {"mode", "escalation_path", "message"},
}


class _Translator:
    def __init__(self, doc: dict[str, Any], source: str | None, sink: DiagnosticSink) -> None:
        self.doc = doc
        self.source = source or ""
        self.sink = sink
        self.items: list[ast.Item] = []

    def at(self, key: str) -> ast.Pos:
        index = self.source.find(f'"{key}"')
        if index < 0:
            return ast.NOWHERE
        line = self.source.count("\n", 0, index) + 1
        return ast.Pos(line, index - (self.source.rfind("\n", 0, index) + 1) + 1)

    def expect(self, value: Any, kind: type | tuple[type, ...], key: str, what: str) -> bool:
        if value is None or (isinstance(value, kind) and not (
                isinstance(value, bool) and kind in (int, float, (int, float)))):
            return True
        pos = self.at(key.rsplit(".", 1)[-1])
        self.sink.error(pos.line, pos.column, f"`{key}` must be {what}",
                        f"got {type(value).__name__}; see \"JSON policy documents\" in "
                        "docs/policy-language.md", code="json-wrong-type")
        return False

    def known_keys(self, value: dict[str, Any], allowed: Collection[str], where: str) -> None:
        for key in value:
            if key in allowed:
                continue
            pos = self.at(key)
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = (f"did you mean `{close[0]}`?" if close else
                    f"known keys here: {', '.join(sorted(allowed))}")
            self.sink.error(pos.line, pos.column,
                            f"unknown key `{key}` in {where or 'the policy document'}", hint,
                            code="json-unknown-key")

    def choice(self, value: Any, allowed: Collection[str], key: str) -> bool:
        if isinstance(value, str) and value in allowed:
            return True
        pos = self.at(key)
        self.sink.error(pos.line, pos.column, f"`{key}` must be one of {', '.join(allowed)}",
                        f"got {value!r}", code="json-bad-choice")
        return False

    def strings(self, value: Any, key: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.expect(object(), list, key, "a list of strings")
            return []
        return value

    def setting(self, key: str, value: Any, json_key: str, as_name: bool = False) -> None:
        if value is None or not self.expect(value, str, json_key, "a string"):
            return
        pos = self.at(json_key.rsplit(".", 1)[-1])
        node: ast.Name | ast.Text = ast.Name(value, pos) if as_name else ast.Text(value, pos)
        self.items.append(ast.Setting(key, node, pos))

    def term_list(self, kind: str, name: str, terms: list[str], key: str,
                  reason: str | None = None) -> None:
        pos = self.at(key)
        self.items.append(ast.TermList(kind, ast.Name(name, pos),
                                       tuple(ast.Text(t, pos) for t in terms), None,
                                       ast.Name(reason, pos) if reason else None, pos))

    def rule(self, name: str, condition: ast.Condition, decision: str, key: str,
             reason: str | None = None, redactions: tuple[ast.Redaction, ...] = ()) -> None:
        pos = self.at(key)
        action = ast.Action(ast.Name(decision, pos), ast.Name(reason, pos) if reason else None,
                            pos=pos)
        self.items.append(ast.Rule(ast.Name(name, pos), (condition,), (action,), redactions, pos))

    def categories_rule(self, categories: list[str], decision: str, key: str,
                        reason: str | None) -> None:
        if not categories:
            return
        pos = self.at(key)
        tests: list[ast.Condition] = [ast.CategoryTest(ast.Text(c, pos), None, None, None, pos)
                                      for c in categories]
        condition = tests[0]
        for test in tests[1:]:
            condition = ast.Or(condition, test, pos)
        self.rule("flagged_categories", condition, decision, key, reason)

    def redaction_rule(self, value: Any, key: str) -> None:
        if value in (None, False, []):
            return
        pos = self.at(key)
        if value is True:
            kinds = ["any"]
        else:
            kinds = self.strings(value, key)
            if not kinds:
                return
        self.rule("redact_pii", ast.PiiTest(ast.Name("any", pos), None, pos), "allow", key,
                  redactions=(ast.RedactPii(tuple(ast.Name(k, pos) for k in kinds), pos),))

    def rollback(self, values: dict[str, Any], key: str, rename: dict[str, str]) -> None:
        pos = self.at(key)
        settings: list[ast.RollbackSetting] = []
        for json_key, value in values.items():
            name = rename.get(json_key, json_key)
            if name == "rollback_decisions":
                decisions = tuple(ast.Name(_ACTIONS.get(d, d), pos)
                                  for d in self.strings(value, json_key))
                settings.append(ast.RollbackSetting(ast.Name(name, pos), decisions, pos))
            elif name == "enabled":
                if self.expect(value, bool, json_key, "true or false"):
                    settings.append(ast.RollbackSetting(ast.Name(name, pos), bool(value), pos))
            elif self.expect(value, (int, float), json_key, "a number"):
                settings.append(ast.RollbackSetting(ast.Name(name, pos), float(value), pos))
        stages = [s for s in self.items if isinstance(s, ast.RolloutDecl)]
        if stages:
            self.items.remove(stages[0])
            self.items.append(ast.RolloutDecl(stages[0].stages, tuple(settings), stages[0].pos))
        else:
            self.items.append(ast.RolloutDecl((), tuple(settings), pos))

    def stage(self, mode: str, percentage: float | None, key: str) -> None:
        pos = self.at(key)
        self.items.append(ast.RolloutDecl((ast.StageDecl(None, ast.Name(mode, pos), percentage,
                                                         pos),), None, pos))

    def quota(self, subject: str, value: Any, key: str) -> None:
        if not value or not self.expect(value, dict, key, "an object"):
            return
        pos = self.at(key)
        limits = []
        for name, amount in value.items():
            pairs = amount.items() if isinstance(amount, dict) else [(None, amount)]
            for window, number in pairs:
                match = re.fullmatch(r"(requests|tokens|tool_calls)_per_(\w+)", name) \
                    if window is None else re.fullmatch(r"(requests|tokens|tool_calls)()", name)
                if match is None or not isinstance(number, int | float):
                    self.sink.error(pos.line, pos.column, f"unknown quota `{key}.{name}`",
                                    'write e.g. {"requests_per_minute": 60, "tokens_per_day": 1e6}',
                                    code="json-unknown-quota")
                    continue
                limits.append(ast.QuotaLimitDecl(ast.Name(match.group(1), pos), float(number),
                                                 ast.Name(window or match.group(2), pos), pos))
        self.items.append(ast.QuotaDecl(ast.Name(subject, pos), tuple(limits), pos))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_\-]+", "_", text.lower()).strip("_") or "policy"


def is_legacy(doc: dict[str, Any]) -> bool:
    return "config" not in doc and any(
        k in doc for k in ("rules", "org_controls", "rollout", "refusal_replacement"))


def is_policy_document(doc: object) -> bool:
    """Whether parsed JSON looks like a policy document of either shape (not e.g. a request)."""
    return isinstance(doc, dict) and ("config" in doc or is_legacy(doc))


def _not_a_policy(doc: dict[str, Any]) -> bool:
    """Keys no policy has, none of them a near miss of a policy key (e.g. a request file)."""
    strangers = [key for key in doc if key not in _TOP]
    known = sorted(_CURRENT_KEYS[""] | _LEGACY_KEYS[""])
    return not is_policy_document(doc) and bool(strangers) and not any(
        difflib.get_close_matches(key, known, n=1) for key in strangers)


def translate(doc: dict[str, Any], source: str | None, sink: DiagnosticSink) -> ast.PolicyAst:
    """Translate a JSON policy document; problems go to `sink`, translation goes on."""
    t = _Translator(doc, source, sink)
    if _not_a_policy(doc):
        sink.error(1, 1, "not a policy document: it has neither `config` nor `rules`",
                   "a JSON policy keeps its rules under `config.rules`; a request file for "
                   "`python -m dsl eval` is passed with --request", code="json-not-a-policy")
        return ast.PolicyAst(ast.Name("v1"), ast.Text("policy"), ())
    name = doc.get("name") or doc.get("policy_id") or doc.get("id") or "policy"
    policy_id = doc.get("policy_id") or doc.get("id") or _slug(str(name))
    t.setting("name", str(name), "name")
    t.setting("description", doc.get("description"), "description")
    t.setting("owner", doc.get("owner"), "owner")
    (_translate_legacy if is_legacy(doc) else _translate_current)(t, doc)
    return ast.PolicyAst(ast.Name("v1"), ast.Text(str(policy_id), t.at("policy_id")),
                         tuple(t.items))


def _section(t: _Translator, doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key) or {}
    return value if t.expect(value, dict, key, "an object") else {}


def _translate_current(t: _Translator, doc: dict[str, Any]) -> None:
    t.known_keys(doc, _CURRENT_KEYS[""], "")
    t.setting("classification", doc.get("classification"), "classification")
    config = _section(t, doc, "config")
    t.known_keys(config, _CURRENT_KEYS["config"], "`config`")
    rules = _section(t, config, "rules")
    t.known_keys(rules, _CURRENT_KEYS["rules"], "`config.rules`")
    action_name = rules.get("enforcement_action", "block")
    action = (_ACTIONS[action_name] if t.choice(action_name, (
        "rewrite", "block", "summarize", "escalate"), "enforcement_action") else "refuse")
    t.setting("escalation_path", rules.get("escalation_path"), "escalation_path")
    for key in ("rewrite_instruction", "summary_instruction"):
        t.setting(key, rules.get(key), f"config.rules.{key}")
    allow = t.strings(rules.get("allowlist"), "allowlist")
    if allow:
        t.term_list("allowlist", "allowlist", allow, "allowlist")
    deny = t.strings(rules.get("denylist"), "denylist")
    if deny:
        t.term_list("denylist", "denylist", deny, "denylist")
        pos = t.at("denylist")
        t.rule("denylist", ast.ContainsList(ast.Name("input", pos), ast.Name("denylist", pos),
                                            pos), action, "denylist")
    t.categories_rule(t.strings(rules.get("flagged_categories"), "flagged_categories"), action,
                      "flagged_categories", None)
    t.redaction_rule(rules.get("redact_pii"), "redact_pii")
    deployment = _section(t, config, "deployment")
    if deployment:
        t.known_keys(deployment, _CURRENT_KEYS["deployment"], "`config.deployment`")
        percentage = deployment.get("percentage", 100)
        enabled = deployment.get("enabled", True)
        t.expect(enabled, bool, "enabled", "true or false")
        if not t.expect(percentage, (int, float), "percentage", "a number from 0 to 100"):
            percentage = 100
        elif not 0 <= percentage <= 100:
            pos = t.at("percentage")
            t.sink.error(pos.line, pos.column, "`percentage` must be from 0 to 100",
                         f"got {percentage!r}", code="json-bad-percentage")
        if enabled is False:
            t.stage("shadow", None, "deployment")
        elif percentage < 100:
            t.stage("canary", float(percentage), "percentage")
        else:
            t.stage("enforced", None, "deployment")
        auto = _section(t, deployment, "auto_rollback")
        if auto:
            t.known_keys(auto, _CURRENT_KEYS["auto_rollback"],
                         "`config.deployment.auto_rollback`")
            t.rollback(auto, "auto_rollback", {})


def _translate_legacy(t: _Translator, doc: dict[str, Any]) -> None:
    t.known_keys(doc, _LEGACY_KEYS[""], "")
    rules = _section(t, doc, "rules")
    controls = _section(t, doc, "org_controls")
    rollout = _section(t, doc, "rollout")
    replacement = _section(t, doc, "refusal_replacement")
    for key, section in (("rules", rules), ("org_controls", controls), ("rollout", rollout),
                         ("refusal_replacement", replacement)):
        t.known_keys(section, _LEGACY_KEYS[key], f"`{key}`")
    t.setting("classification", controls.get("data_classification"), "data_classification")
    t.setting("escalation_path", replacement.get("escalation_path"), "escalation_path")
    _translate_legacy_rules(t, rules, _legacy_action(t, rules, replacement))
    t.quota("project", controls.get("project_quota"), "project_quota")
    t.quota("user", controls.get("user_quota"), "user_quota")
    if rollout:
        _translate_legacy_rollout(t, rollout)


def _legacy_action(t: _Translator, rules: dict[str, Any], replacement: dict[str, Any]) -> str:
    """What every legacy rule decides: refuse, unless the file asks for a rewrite or names
    another replacement mode; the replacement message becomes that decision's text."""
    action = "rewrite" if rules.get("rewrite_instead_of_refuse") else "refuse"
    mode = replacement.get("mode")
    if isinstance(mode, str) and mode not in ("refuse", "block", "none"):
        action = _ACTIONS.get(mode, mode)
    if isinstance(replacement.get("message"), str):
        # The replacement text of a rewrite or summary is the instruction the model gets.
        key = {"escalate": "escalation_message", "rewrite": "rewrite_instruction",
               "summary": "summary_instruction"}.get(action, "refusal_message")
        t.setting(key, replacement["message"], "message")
    return action


def _translate_legacy_rules(t: _Translator, rules: dict[str, Any], action: str) -> None:
    codes = rules.get("reason_codes") or {}
    reason: Callable[[str], str | None] = (
        (lambda rule: codes.get(rule)) if isinstance(codes, dict) else (lambda rule: None))
    allow = t.strings(rules.get("allowlist"), "allowlist")
    if allow:
        t.term_list("allowlist", "allowlist", allow, "allowlist", reason("allowlist"))
    deny = t.strings(rules.get("denylist"), "denylist")
    if deny:
        t.term_list("denylist", "denylist", deny, "denylist")
        pos = t.at("denylist")
        t.rule("denylist", ast.ContainsList(ast.Name("input", pos), ast.Name("denylist", pos),
                                            pos), action, "denylist", reason("denylist"))
    t.categories_rule(t.strings(rules.get("flagged_categories"), "flagged_categories"), action,
                      "flagged_categories", reason("flagged_categories"))
    t.redaction_rule(rules.get("redact"), "redact")
    patterns = rules.get("response_pattern")
    for index, pattern in enumerate([patterns] if isinstance(patterns, str) else
                                    t.strings(patterns, "response_pattern")):
        pos = t.at("response_pattern")
        t.rule("response_pattern" + (f"_{index + 1}" if index else ""),
               ast.MatchesRegex(ast.Name("output", pos), pattern, "", pos), action,
               "response_pattern", reason("response_pattern"))


def _translate_legacy_rollout(t: _Translator, rollout: dict[str, Any]) -> None:
    canary = rollout.get("canary")
    if rollout.get("shadow"):
        t.stage("shadow", None, "shadow")
    elif isinstance(canary, int | float) and not isinstance(canary, bool) and canary < 100:
        t.stage("canary", float(canary), "canary")
    elif isinstance(canary, dict) and isinstance(canary.get("percentage"), int | float):
        t.stage("canary", float(canary["percentage"]), "canary")
    else:
        t.stage("enforced", None, "rollout")
    auto = {k: v for k, v in rollout.items() if k in (
        "rollback_on_spike", "rollback_threshold", "min_requests", "window_minutes",
        "cooldown_minutes", "rollback_decisions")}
    if auto:
        t.rollback(auto, "rollout", {"rollback_on_spike": "enabled",
                                     "rollback_threshold": "threshold_pct"})
