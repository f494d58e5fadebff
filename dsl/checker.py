"""Semantic checks on a parsed policy: names, types, duplicates, dead rules, regexes, limits.

Every problem is appended to the sink with a stable code (dsl/diagnostic_codes.py); nothing
raises, so one run reports every error in a file.  Conditions are checked in
dsl/check_conditions.py, rollout and quotas in dsl/check_declarations.py.
"""

from __future__ import annotations

from dsl import ast
from dsl.check_conditions import ConditionChecks
from dsl.check_declarations import DeclarationChecks
from dsl.diagnostics import DiagnosticSink
from dsl.stages import stream_safe
from dsl.terms import normalize
from dsl.vocabulary import (
    ESCALATION_PATH,
    MAX_RULES,
    MAX_TERM_LENGTH,
    MAX_TERMS_PER_LIST,
    OUTPUT_TEXTS,
    POLICY_ID,
    REASON_CODE,
)
from dsl.walk import leaves as leaves
from dsl.walk import pattern_width as pattern_width
from dsl.walk import re2_options as re2_options
from dsl.walk import regex_source as regex_source
from dsl.walk import texts_of as texts_of


class Checker(ConditionChecks, DeclarationChecks):
    def run(self) -> None:
        policy = self.policy
        if policy.version.text != "v1":
            self.err("unsupported-version", policy.version.pos,
                     f"unsupported language version `{policy.version.text}`",
                     "this checker understands `v1`")
        if not POLICY_ID.match(policy.policy_id.value):
            self.err("invalid-policy-id", policy.policy_id.pos,
                     f"invalid policy id {policy.policy_id.value!r}",
                     "use a slug: lower case letters, digits, `_` or `-`, e.g. \"support_bot\"")
        for item in policy.items:
            if isinstance(item, ast.Setting):
                self.check_setting(item)
            elif isinstance(item, ast.TermList):
                self.check_list(item)
        self.check_rules([i for i in policy.items if isinstance(i, ast.Rule)])
        rollouts = [i for i in policy.items if isinstance(i, ast.RolloutDecl)]
        for extra in rollouts[1:]:
            self.err("duplicate-rollout", extra.pos, "duplicate `rollout` block",
                     f"merge it into the one at line {rollouts[0].pos.line}")
        for rollout in rollouts:
            self.check_rollout(rollout)
        subjects: dict[str, ast.QuotaDecl] = {}
        for quota in (i for i in policy.items if isinstance(i, ast.QuotaDecl)):
            first_quota = subjects.setdefault(quota.subject.text, quota)
            if first_quota is not quota:
                self.err("duplicate-quota", quota.pos,
                         f"duplicate `quota {quota.subject.text}` block",
                         f"merge it into the one at line {first_quota.pos.line}")
            self.check_quota(quota)
        self.check_unused_lists()

    def check_rules(self, rules: list[ast.Rule]) -> None:
        if len(rules) > MAX_RULES:
            self.err("too-many-rules", rules[MAX_RULES].pos, f"too many rules ({len(rules)})",
                     f"a policy may have at most {MAX_RULES} rules; merge rules with `or`")
        seen_rules: dict[str, ast.Rule] = {}
        for rule in rules:
            first = seen_rules.setdefault(rule.name.text, rule)
            if first is not rule:
                self.err("duplicate-rule", rule.name.pos, f"duplicate rule `{rule.name.text}`",
                         f"first defined at line {first.pos.line}; rename one of them")
            self.check_rule(rule)

    def check_unused_lists(self) -> None:
        if self.policy.recovered:
            return  # a statement lost to a syntax error may be the one that used the list
        for term_list in self.lists.values():
            name = term_list.name.text
            if term_list.kind != "allowlist" and name not in self.used_lists:
                test = (f"tool.name in {name}" if term_list.kind == "tools"
                        else f"input contains any of {name}")
                self.warn("unused-list", term_list.name.pos, f"list `{name}` is never used",
                          f"test it in a rule: `when {test}`")

    # --- settings and lists
    def check_setting(self, setting: ast.Setting) -> None:
        first = self.settings.setdefault(setting.key, setting)
        if first is not setting:
            self.err("setting-twice", setting.pos, f"`{setting.key}` is set twice",
                     f"first set at line {first.pos.line}; keep one")
        value = setting.value
        if setting.key in ("default", "on_error"):
            self.check_decision(value)  # type: ignore[arg-type]
        elif setting.key == "escalation_path" and isinstance(value, ast.Text):
            if not ESCALATION_PATH.match(value.value):
                self.err("invalid-escalation-path", value.pos,
                         f"invalid escalation path {value.value!r}",
                         'name a configured escalation target ("oncall"), or give an e-mail '
                         'address')
        elif isinstance(value, ast.Text) and not value.value.strip():
            self.err("empty-setting", value.pos, f"`{setting.key}` is empty",
                     "write the text between the quotes")

    def check_reason(self, name: ast.Name | None) -> None:
        if name is not None and not REASON_CODE.match(name.text):
            self.err("reason-code-case", name.pos,
                     f"reason code `{name.text}` is not UPPER_SNAKE_CASE",
                     f"write it as `{normalize(name.text).upper().replace(' ', '_')}`")

    def check_list(self, term_list: ast.TermList) -> None:
        name = term_list.name.text
        first = self.lists.setdefault(name, term_list)
        if first is not term_list:
            self.err("duplicate-list", term_list.name.pos, f"duplicate list `{name}`",
                     f"first declared at line {first.pos.line}; rename one of them")
        if term_list.kind == "allowlist":
            allowlists = [x for x in self.lists.values() if x.kind == "allowlist"]
            if allowlists and allowlists[0] is not term_list:
                self.err("second-allowlist", term_list.pos, "a policy has at most one allowlist",
                         f"merge it into `{allowlists[0].name.text}` or declare it with `list`")
            if term_list.text is not None:
                self.check_text(term_list.text)
            self.check_reason(term_list.reason)
        if len(term_list.terms) > MAX_TERMS_PER_LIST:
            self.err("too-many-terms", term_list.pos,
                     f"list `{name}` has {len(term_list.terms)} terms",
                     f"a list may hold at most {MAX_TERMS_PER_LIST} terms; split it")
        if not term_list.terms:
            self.warn("empty-list", term_list.pos, f"list `{name}` is empty",
                      "rules testing it can never fire; add terms or remove it")
        self.check_terms(term_list.terms)

    def check_terms(self, terms: tuple[ast.Text, ...]) -> None:
        seen: dict[str, ast.Text] = {}
        for term in terms:
            key = normalize(term.value)
            if not key:
                self.err("empty-term", term.pos, "empty term",
                         "remove it or write the word to match")
            elif len(term.value) > MAX_TERM_LENGTH:
                self.err("term-too-long", term.pos, f"term longer than {MAX_TERM_LENGTH} characters",
                         "use a `matches` pattern for long text")
            elif key in seen:
                self.warn("repeated-term", term.pos, f"term {term.value!r} repeats "
                          f"{seen[key].value!r}",
                          "terms match after folding case, width, accents and look-alikes; "
                          "remove the repeat")
            else:
                seen[key] = term

    # --- rules
    def check_rule(self, rule: ast.Rule) -> None:
        label = f"rule `{rule.name.text}`"
        if not rule.conditions:
            self.err("rule-without-when", rule.name.pos, f"{label} has no `when` condition",
                     "add `when <condition>`, e.g. `when input contains any of denylist`")
        for extra in rule.conditions[1:]:
            self.err("rule-two-whens", extra.pos, f"{label} has more than one `when`",
                     "combine the conditions with `and` / `or`")
        if not rule.actions and not rule.redactions:
            self.err("rule-without-action", rule.name.pos, f"{label} has no action",
                     "add `then refuse` (or allow, rewrite, summary, escalate) or a `redact`")
        for extra_action in rule.actions[1:]:
            self.err("rule-two-thens", extra_action.pos, f"{label} has more than one `then`",
                     "split it into two rules; the most severe action wins anyway")
        for condition in rule.conditions:
            self.check_condition(condition)
            self.check_contradictions(rule, condition)
            self.check_negated_tool_tests(rule, condition)
        for action in rule.actions[:1]:
            self.check_action(rule, action)
            self.check_stream_stage(rule, action)
        for redaction in rule.redactions:
            self.check_redaction(rule, redaction)

    def check_action(self, rule: ast.Rule, action: ast.Action) -> None:
        if not self.check_decision(action.decision):
            return
        decision = action.decision.text
        self.check_reason(action.reason)
        if action.message is not None and decision not in ("refuse", "escalate"):
            self.err("message-not-allowed", action.message.pos,
                     f"`message` is for refuse and escalate, not {decision}",
                     "use `instruction \"...\"` for rewrite and summary")
        if action.instruction is not None and decision not in ("rewrite", "summary"):
            self.err("instruction-not-allowed", action.instruction.pos,
                     f"`instruction` is for rewrite and summary, not {decision}",
                     "use `message \"...\"` for refuse and escalate")
        default = self.settings.get("default")
        default_decision = default.value.text if default and isinstance(
            default.value, ast.Name) else "allow"
        if decision == "allow" and default_decision == "allow" and not rule.redactions:
            self.warn("rule-without-effect", action.decision.pos,
                      f"rule `{rule.name.text}` has no effect",
                      "the default is already allow; add a `redact` or remove the rule")
        if decision == "escalate" and "escalation_path" not in self.settings:
            self.err("escalate-without-path", action.decision.pos,
                     "escalate needs an escalation path",
                     'declare `escalation_path "https://..."` or an email address')

    def check_stream_stage(self, rule: ast.Rule, action: ast.Action) -> None:
        """A stopping rule that only the whole answer can decide cannot hold a stream back."""
        condition = rule.conditions[0] if rule.conditions else None
        if (condition is None or action.decision.text not in ("refuse", "escalate")
                or not texts_of(condition) & OUTPUT_TEXTS or stream_safe(condition)):
            return
        self.warn("decided-after-stream", condition.pos,
                  f"rule `{rule.name.text}` is decided only when a streamed answer "
                  "has ended, after its text was sent",
                  "the stream is then ended with the refusal, but what was sent stays sent; test "
                  "for presence (`output contains ...`) to stop a stream before the text leaves")

    def check_redaction(self, rule: ast.Rule, redaction: ast.Redaction) -> None:
        if isinstance(redaction, ast.RedactPii):
            for kind in redaction.kinds:
                self.check_pii_kind(kind)
            return
        for name in redaction.lists:
            found = self.check_list_ref(name)
            if found is not None and found.kind == "tools":
                self.err("tools-list-in-text", name.pos,
                         f"`{name.text}` is a `tools` list: it holds tool names, not terms",
                         "redact terms of a `list` or `denylist`")
        if not redaction.lists and not any(
                isinstance(leaf, ast.ContainsList) for c in rule.conditions for leaf in leaves(c)):
            self.err("redact-matched-without-list", redaction.pos,
                     "`redact matched terms` but this rule tests no term list",
                     "name the lists: `redact terms of <list>`")


def check_ast(policy: ast.PolicyAst, sink: DiagnosticSink) -> None:
    Checker(policy, sink).run()
