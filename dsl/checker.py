"""Semantic checks on a parsed policy: names, types, duplicates, dead rules, regexes, limits.

Every problem is appended to the sink; nothing raises, so one run reports every error in a file.
"""

from __future__ import annotations

from collections.abc import Iterator

import re2

from dsl import ast
from dsl.classifiers import CATEGORIES, PII_KINDS
from dsl.decision import DECISIONS
from dsl.diagnostics import DiagnosticSink, did_you_mean
from dsl.terms import normalize
from dsl.vocabulary import (
    ESCALATION_PATH,
    FIELDS,
    MAX_PATTERN_LENGTH,
    MAX_RULES,
    MAX_TERM_LENGTH,
    MAX_TERMS_PER_LIST,
    POLICY_ID,
    QUOTA_SUBJECTS,
    QUOTA_UNITS,
    QUOTA_WINDOWS,
    REASON_CODE,
    REGEX_FLAGS,
    ROLLBACK_NUMBERS,
    STAGE_MODES,
    TEXTS,
)

_SINGLE_SETTINGS = ("name", "description", "owner", "classification", "default", "on_error",
                    "escalation_path", "refusal_message", "escalation_message",
                    "rewrite_instruction", "summary_instruction")


def re2_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    return options


def regex_source(pattern: str, flags: str) -> str:
    return f"(?{flags})" + pattern if flags else pattern


def leaves(condition: ast.Condition) -> Iterator[ast.Condition]:
    if isinstance(condition, ast.And | ast.Or):
        yield from leaves(condition.left)
        yield from leaves(condition.right)
    elif isinstance(condition, ast.Not):
        yield from leaves(condition.operand)
    else:
        yield condition


def texts_of(condition: ast.Condition) -> set[str]:
    found = set()
    for leaf in leaves(condition):
        if isinstance(leaf, ast.ContainsList | ast.ContainsLiteral | ast.MatchesRegex):
            found.add(leaf.text.text)
        elif isinstance(leaf, ast.CategoryTest | ast.PiiTest):
            found.add(leaf.text.text if leaf.text else "input")
    return found


class Checker:
    def __init__(self, policy: ast.PolicyAst, sink: DiagnosticSink) -> None:
        self.policy = policy
        self.sink = sink
        self.lists: dict[str, ast.TermList] = {}
        self.settings: dict[str, ast.Setting] = {}

    def err(self, pos: ast.Pos, message: str, hint: str | None = None) -> None:
        self.sink.error(pos.line, pos.column, message, hint)

    def warn(self, pos: ast.Pos, message: str, hint: str | None = None) -> None:
        self.sink.warning(pos.line, pos.column, message, hint)

    def run(self) -> None:
        policy = self.policy
        if policy.version.text != "v1":
            self.err(policy.version.pos, f"unsupported language version `{policy.version.text}`",
                     "this checker understands `v1`")
        if not POLICY_ID.match(policy.policy_id.value):
            self.err(policy.policy_id.pos, f"invalid policy id {policy.policy_id.value!r}",
                     "use a slug: lower case letters, digits, `_` or `-`, e.g. \"support_bot\"")
        items = policy.items
        for item in items:
            if isinstance(item, ast.Setting):
                self.check_setting(item)
            elif isinstance(item, ast.TermList):
                self.check_list(item)
        rules = [i for i in items if isinstance(i, ast.Rule)]
        if len(rules) > MAX_RULES:
            self.err(rules[MAX_RULES].pos, f"too many rules ({len(rules)})",
                     f"a policy may have at most {MAX_RULES} rules; merge rules with `or`")
        seen_rules: dict[str, ast.Rule] = {}
        for rule in rules:
            first = seen_rules.setdefault(rule.name.text, rule)
            if first is not rule:
                self.err(rule.name.pos, f"duplicate rule `{rule.name.text}`",
                         f"first defined at line {first.pos.line}; rename one of them")
            self.check_rule(rule)
        rollouts = [i for i in items if isinstance(i, ast.RolloutDecl)]
        for extra in rollouts[1:]:
            self.err(extra.pos, "duplicate `rollout` block",
                     f"merge it into the one at line {rollouts[0].pos.line}")
        for rollout in rollouts:
            self.check_rollout(rollout)
        subjects: dict[str, ast.QuotaDecl] = {}
        for quota in (i for i in items if isinstance(i, ast.QuotaDecl)):
            first_quota = subjects.setdefault(quota.subject.text, quota)
            if first_quota is not quota:
                self.err(quota.pos, f"duplicate `quota {quota.subject.text}` block",
                         f"merge it into the one at line {first_quota.pos.line}")
            self.check_quota(quota)
        used = {leaf.list_name.text for r in rules for c in r.conditions for leaf in leaves(c)
                if isinstance(leaf, ast.ContainsList)}
        used |= {n.text for r in rules for red in r.redactions if isinstance(red, ast.RedactTerms)
                 for n in red.lists}
        for term_list in self.lists.values():
            if term_list.kind != "allowlist" and term_list.name.text not in used:
                self.warn(term_list.name.pos, f"list `{term_list.name.text}` is never used",
                          f"test it in a rule: `when input contains any of {term_list.name.text}`")

    # --- settings and lists
    def check_setting(self, setting: ast.Setting) -> None:
        first = self.settings.setdefault(setting.key, setting)
        if first is not setting:
            self.err(setting.pos, f"`{setting.key}` is set twice",
                     f"first set at line {first.pos.line}; keep one")
        value = setting.value
        if setting.key in ("default", "on_error"):
            self.check_decision(value)  # type: ignore[arg-type]
        elif setting.key == "escalation_path" and isinstance(value, ast.Text):
            if not ESCALATION_PATH.match(value.value):
                self.err(value.pos, f"invalid escalation path {value.value!r}",
                         'name a configured escalation target ("oncall"), or give an e-mail address')
        elif isinstance(value, ast.Text) and not value.value.strip():
            self.err(value.pos, f"`{setting.key}` is empty", "write the text between the quotes")

    def check_decision(self, name: ast.Name) -> bool:
        if name.text in DECISIONS:
            return True
        self.err(name.pos, f"unknown decision `{name.text}`", did_you_mean(name.text, DECISIONS))
        return False

    def check_reason(self, name: ast.Name | None) -> None:
        if name is not None and not REASON_CODE.match(name.text):
            self.err(name.pos, f"reason code `{name.text}` is not UPPER_SNAKE_CASE",
                     f"write it as `{normalize(name.text).upper().replace(' ', '_')}`")

    def check_list(self, term_list: ast.TermList) -> None:
        name = term_list.name.text
        first = self.lists.setdefault(name, term_list)
        if first is not term_list:
            self.err(term_list.name.pos, f"duplicate list `{name}`",
                     f"first declared at line {first.pos.line}; rename one of them")
        if term_list.kind == "allowlist":
            allowlists = [x for x in self.lists.values() if x.kind == "allowlist"]
            if allowlists and allowlists[0] is not term_list:
                self.err(term_list.pos, "a policy has at most one allowlist",
                         f"merge it into `{allowlists[0].name.text}` or declare it with `list`")
            if term_list.text is not None:
                self.check_text(term_list.text)
            self.check_reason(term_list.reason)
        if len(term_list.terms) > MAX_TERMS_PER_LIST:
            self.err(term_list.pos, f"list `{name}` has {len(term_list.terms)} terms",
                     f"a list may hold at most {MAX_TERMS_PER_LIST} terms; split it")
        if not term_list.terms:
            self.warn(term_list.pos, f"list `{name}` is empty",
                      "rules testing it can never fire; add terms or remove it")
        seen: dict[str, ast.Text] = {}
        for term in term_list.terms:
            key = normalize(term.value)
            if not key:
                self.err(term.pos, "empty term", "remove it or write the word to match")
            elif len(term.value) > MAX_TERM_LENGTH:
                self.err(term.pos, f"term longer than {MAX_TERM_LENGTH} characters",
                         "use a `matches` pattern for long text")
            elif key in seen:
                self.warn(term.pos, f"term {term.value!r} repeats {seen[key].value!r}",
                          "terms match case-insensitively after NFKC; remove the repeat")
            else:
                seen[key] = term

    def check_text(self, name: ast.Name) -> bool:
        if name.text in TEXTS:
            return True
        if name.text in FIELDS:
            self.err(name.pos, f"`{name.text}` is a request field, not a text",
                     f"texts are {', '.join(TEXTS)}; compare fields with `==`, `in` or `matches`")
        else:
            self.err(name.pos, f"unknown text `{name.text}`", did_you_mean(name.text, TEXTS))
        return False

    def check_list_ref(self, name: ast.Name) -> ast.TermList | None:
        found = self.lists.get(name.text)
        if found is None:
            self.err(name.pos, f"unknown list `{name.text}`", did_you_mean(name.text, self.lists))
        return found

    # --- rules
    def check_rule(self, rule: ast.Rule) -> None:
        label = f"rule `{rule.name.text}`"
        if not rule.conditions:
            self.err(rule.name.pos, f"{label} has no `when` condition",
                     "add `when <condition>`, e.g. `when input contains any of denylist`")
        for extra in rule.conditions[1:]:
            self.err(extra.pos, f"{label} has more than one `when`",
                     "combine the conditions with `and` / `or`")
        if not rule.actions and not rule.redactions:
            self.err(rule.name.pos, f"{label} has no action",
                     "add `then refuse` (or allow, rewrite, summary, escalate) or a `redact`")
        for extra_action in rule.actions[1:]:
            self.err(extra_action.pos, f"{label} has more than one `then`",
                     "split it into two rules; the most severe action wins anyway")
        for condition in rule.conditions:
            self.check_condition(condition)
            self.check_contradictions(rule, condition)
        for action in rule.actions[:1]:
            self.check_action(rule, action)
        for redaction in rule.redactions:
            self.check_redaction(rule, redaction)

    def check_action(self, rule: ast.Rule, action: ast.Action) -> None:
        if not self.check_decision(action.decision):
            return
        decision = action.decision.text
        self.check_reason(action.reason)
        if action.message is not None and decision not in ("refuse", "escalate"):
            self.err(action.message.pos, f"`message` is for refuse and escalate, not {decision}",
                     "use `instruction \"...\"` for rewrite and summary")
        if action.instruction is not None and decision not in ("rewrite", "summary"):
            self.err(action.instruction.pos,
                     f"`instruction` is for rewrite and summary, not {decision}",
                     "use `message \"...\"` for refuse and escalate")
        default = self.settings.get("default")
        default_decision = default.value.text if default and isinstance(
            default.value, ast.Name) else "allow"
        if decision == "allow" and default_decision == "allow" and not rule.redactions:
            self.warn(action.decision.pos, f"rule `{rule.name.text}` has no effect",
                      "the default is already allow; add a `redact` or remove the rule")
        if decision in ("rewrite", "summary") and action.instruction is None:
            if f"{decision}_instruction" not in self.settings:
                self.warn(action.decision.pos, f"{decision} without an instruction",
                          f"add `instruction \"...\"` or a policy-level `{decision}_instruction`")
        if decision == "escalate" and "escalation_path" not in self.settings:
            self.err(action.decision.pos, "escalate needs an escalation path",
                     'declare `escalation_path "https://..."` or an email address')

    def check_redaction(self, rule: ast.Rule, redaction: ast.Redaction) -> None:
        if isinstance(redaction, ast.RedactPii):
            for kind in redaction.kinds:
                if kind.text != "any" and kind.text not in PII_KINDS:
                    self.err(kind.pos, f"unknown PII kind `{kind.text}`",
                             did_you_mean(kind.text, (*PII_KINDS, "any")))
            return
        for name in redaction.lists:
            self.check_list_ref(name)
        if not redaction.lists and not any(
                isinstance(leaf, ast.ContainsList) for c in rule.conditions for leaf in leaves(c)):
            self.err(redaction.pos, "`redact matched terms` but this rule tests no term list",
                     "name the lists: `redact terms of <list>`")

    def check_condition(self, condition: ast.Condition) -> None:
        for leaf in leaves(condition):
            self.check_leaf(leaf)
        for text in texts_of(condition):
            if text == "output" and any(
                    isinstance(leaf, ast.MatchesRegex) and leaf.text.text == "output"
                    and _unbounded(leaf.pattern) for leaf in leaves(condition)):
                self.warn(condition.pos, "output pattern with unbounded length",
                          "while streaming, a match longer than 256 characters may be released "
                          "before it is seen; bound repeats, e.g. `.{0,100}`")
                break

    def check_leaf(self, leaf: ast.Condition) -> None:
        if isinstance(leaf, ast.ContainsList):
            self.check_text(leaf.text)
            found = self.check_list_ref(leaf.list_name)
            if found is not None and not found.terms:
                self.warn(leaf.list_name.pos, f"list `{found.name.text}` is empty",
                          "this test can never be true; add terms")
        elif isinstance(leaf, ast.ContainsLiteral):
            self.check_text(leaf.text)
            if not normalize(leaf.literal.value):
                self.err(leaf.literal.pos, "empty `contains` text", "write the text to look for")
        elif isinstance(leaf, ast.MatchesRegex):
            if leaf.text.text in FIELDS and FIELDS[leaf.text.text][0] == "string":
                self.err(leaf.pos, f"`{leaf.text.text}` takes a \"glob\", not a /regex/",
                         f'write `{leaf.text.text} matches "gpt-4*"`')
            else:
                self.check_text(leaf.text)
            self.check_regex(leaf)
        elif isinstance(leaf, ast.MatchesGlob):
            if leaf.field.text in TEXTS:
                self.err(leaf.glob.pos, "texts take a /regex/, not a \"glob\"",
                         f"write `{leaf.field.text} matches /pattern/` or `contains \"...\"`")
            elif self.check_field(leaf.field, ("string",)):
                pass
        elif isinstance(leaf, ast.Compare):
            kind = self.check_field(leaf.field, ("string", "number", "bool"))
            if kind is not None:
                self.check_value(leaf.field, kind, leaf.value, leaf.pos)
                if kind != "number" and leaf.op not in ("==", "!="):
                    self.err(leaf.pos, f"`{leaf.op}` needs a number; `{leaf.field.text}` is a {kind}",
                             "use `==` or `!=`")
        elif isinstance(leaf, ast.InValues):
            kind = self.check_field(leaf.field, ("string", "number"))
            if kind is not None:
                for value in leaf.values:
                    self.check_value(leaf.field, kind, value, leaf.pos)
        elif isinstance(leaf, ast.Flag):
            if leaf.field.text in TEXTS:
                self.err(leaf.pos, f"`{leaf.field.text}` is a text; say what to test",
                         f"e.g. `{leaf.field.text} contains any of <list>`")
            else:
                self.check_field(leaf.field, ("bool",))
        elif isinstance(leaf, ast.CategoryTest):
            if leaf.category.value not in CATEGORIES:
                self.err(leaf.category.pos, f"unknown category {leaf.category.value!r}",
                         did_you_mean(leaf.category.value, CATEGORIES))
            if leaf.threshold is not None and not 0 <= leaf.threshold <= 1:
                self.err(leaf.pos, f"category score {leaf.threshold:g} is outside 0..1",
                         "scores are between 0 and 1, e.g. `>= 0.8`")
            if leaf.text is not None:
                self.check_text(leaf.text)
        elif isinstance(leaf, ast.PiiTest):
            if leaf.kind.text != "any" and leaf.kind.text not in PII_KINDS:
                self.err(leaf.kind.pos, f"unknown PII kind `{leaf.kind.text}`",
                         did_you_mean(leaf.kind.text, (*PII_KINDS, "any")))
            if leaf.text is not None:
                self.check_text(leaf.text)

    def check_field(self, name: ast.Name, allowed: tuple[str, ...]) -> str | None:
        if name.text not in FIELDS:
            if name.text in TEXTS:
                self.err(name.pos, f"`{name.text}` is a text, not a request field",
                         "test texts with `contains` or `matches /regex/`")
            else:
                self.err(name.pos, f"unknown field `{name.text}`", did_you_mean(name.text, FIELDS))
            return None
        kind = FIELDS[name.text][0]
        if kind not in allowed:
            self.err(name.pos, f"`{name.text}` is a {kind}; this test needs a {' or '.join(allowed)}",
                     f"test a {kind} with " + {"bool": f"`{name.text}` or `not {name.text}`",
                                               "number": "`<`, `>=`, `==` or `in`",
                                               "string": "`==`, `in` or `matches \"glob\"`"}[kind])
            return None
        return kind

    def check_value(self, field: ast.Name, kind: str, value: object, pos: ast.Pos) -> None:
        actual = "bool" if isinstance(value, bool) else "number" if isinstance(
            value, float) else "string"
        if actual != kind:
            example = {"string": '"text"', "number": "42", "bool": "true"}[kind]
            self.err(pos, f"type mismatch: `{field.text}` is a {kind}, compared with a {actual}",
                     f"write a {kind}, e.g. {example}")

    def check_regex(self, leaf: ast.MatchesRegex) -> None:
        bad_flags = sorted(set(leaf.flags) - set(REGEX_FLAGS))
        if bad_flags:
            self.err(leaf.pos, f"unknown regex flag `{''.join(bad_flags)}`",
                     "flags are i (ignore case), m (multi-line), s (dot matches newline)")
            return
        if len(leaf.pattern) > MAX_PATTERN_LENGTH:
            self.err(leaf.pos, f"pattern longer than {MAX_PATTERN_LENGTH} characters",
                     "split it into several rules or use a term list")
            return
        try:
            re2.compile(regex_source(leaf.pattern, leaf.flags), re2_options())
        except re2.error as error:
            detail = error.args[0].decode() if error.args and isinstance(
                error.args[0], bytes) else str(error)
            self.err(leaf.pos, f"pattern is not a linear-time (RE2) regex: {detail}",
                     "RE2 has no backreferences or lookaround, which guarantees linear-time "
                     "matching; rewrite without them")

    def check_contradictions(self, rule: ast.Rule, condition: ast.Condition) -> None:
        """Conjunctions that can never be true: `x == a and x == b`, `x > 5 and x < 3`, ..."""
        equal: dict[str, tuple[object, ast.Condition]] = {}
        low: dict[str, float] = {}
        high: dict[str, float] = {}
        for literal, positive in _conjuncts(condition):
            field, value = None, None
            if isinstance(literal, ast.Compare) and literal.op == "==" and positive:
                field, value = literal.field.text, literal.value
            elif isinstance(literal, ast.Flag):
                field, value = literal.field.text, positive
            elif isinstance(literal, ast.Compare) and positive and isinstance(literal.value, float):
                bound = literal.value
                if literal.op in (">", ">="):
                    low[literal.field.text] = max(low.get(literal.field.text, -1e300),
                                                  bound + (1e-9 if literal.op == ">" else 0))
                elif literal.op in ("<", "<="):
                    high[literal.field.text] = min(high.get(literal.field.text, 1e300),
                                                   bound - (1e-9 if literal.op == "<" else 0))
            if field is None:
                continue
            previous = equal.setdefault(field, (value, literal))
            if previous[0] != value:
                self.err(literal.pos, f"rule `{rule.name.text}` can never fire: `{field}` "
                         f"cannot be both {_show(previous[0])} and {_show(value)}",
                         "use `or` (or `in [...]`) for alternatives")
        for field in set(low) & set(high):
            if low[field] > high[field]:
                self.err(condition.pos, f"rule `{rule.name.text}` can never fire: the bounds "
                         f"on `{field}` leave no possible value", "check the comparison operators")

    # --- rollout and quotas
    def check_rollout(self, rollout: ast.RolloutDecl) -> None:
        targets: dict[str | None, ast.StageDecl] = {}
        for stage in rollout.stages:
            key = stage.target.value if stage.target else None
            first = targets.setdefault(key, stage)
            if first is not stage:
                what = f"target {key!r}" if key else "`otherwise`"
                self.err(stage.pos, f"{what} has two stages",
                         f"first given at line {first.pos.line}; keep one")
            mode = stage.mode.text
            if mode not in STAGE_MODES:
                self.err(stage.mode.pos, f"unknown rollout stage `{mode}`",
                         did_you_mean(mode, STAGE_MODES))
            elif mode == "canary" and (stage.percentage is None
                                       or not 0 < stage.percentage <= 100):
                self.err(stage.mode.pos, "canary needs a percentage between 0 and 100",
                         "e.g. `canary 10%`")
            elif mode != "canary" and stage.percentage is not None:
                self.err(stage.mode.pos, f"`{mode}` takes no percentage",
                         "only `canary` is sampled, e.g. `canary 10%`")
        seen: set[str] = set()
        for setting in rollout.auto_rollback or ():
            key = setting.key.text
            if key in seen:
                self.err(setting.pos, f"`{key}` is set twice", "keep one")
            seen.add(key)
            if key == "enabled":
                if not isinstance(setting.value, bool):
                    self.err(setting.pos, "`enabled` is true or false", "write `enabled true`")
            elif key == "rollback_decisions":
                for name in setting.value:  # type: ignore[union-attr]
                    self.check_decision(name)  # type: ignore[arg-type]
            elif key not in ROLLBACK_NUMBERS:
                self.err(setting.key.pos, f"unknown auto_rollback setting `{key}`",
                         did_you_mean(key, (*ROLLBACK_NUMBERS, "enabled", "rollback_decisions")))
            else:
                number = float(setting.value)  # type: ignore[arg-type]
                if key == "threshold_pct" and not 0 <= number <= 100:
                    self.err(setting.pos, "threshold_pct is a percentage", "use 0..100")
                elif key != "threshold_pct" and (number < 1 or number != int(number)):
                    self.err(setting.pos, f"`{key}` must be a whole number of at least 1",
                             "e.g. `window_minutes 10`")

    def check_quota(self, quota: ast.QuotaDecl) -> None:
        if quota.subject.text not in QUOTA_SUBJECTS:
            self.err(quota.subject.pos, f"unknown quota subject `{quota.subject.text}`",
                     did_you_mean(quota.subject.text, QUOTA_SUBJECTS))
        seen: dict[tuple[str, str], ast.QuotaLimitDecl] = {}
        for limit in quota.limits:
            if limit.unit.text not in QUOTA_UNITS:
                self.err(limit.unit.pos, f"unknown quota unit `{limit.unit.text}`",
                         did_you_mean(limit.unit.text, QUOTA_UNITS))
            if limit.window.text not in QUOTA_WINDOWS:
                self.err(limit.window.pos, f"unknown quota window `{limit.window.text}`",
                         did_you_mean(limit.window.text, QUOTA_WINDOWS))
            if limit.limit != int(limit.limit):
                self.err(limit.pos, "a quota limit is a whole number", "e.g. `requests 100 per hour`")
            key = (limit.unit.text, QUOTA_WINDOWS.get(limit.window.text, limit.window.text))
            first = seen.setdefault(key, limit)
            if first is not limit:
                self.err(limit.pos, f"two `{key[0]}` limits per {limit.window.text}",
                         f"first given at line {first.pos.line}; keep one")


def _conjuncts(condition: ast.Condition) -> Iterator[tuple[ast.Condition, bool]]:
    if isinstance(condition, ast.And):
        yield from _conjuncts(condition.left)
        yield from _conjuncts(condition.right)
    elif isinstance(condition, ast.Not) and not isinstance(condition.operand, ast.And | ast.Or):
        yield condition.operand, False
    elif not isinstance(condition, ast.Or | ast.Not):
        yield condition, True


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return f'"{value}"'


def pattern_width(pattern: str) -> int | None:
    """Longest possible match of a pattern, or None when unbounded or unknown."""
    import re._parser as sre_parse

    try:
        _, high = sre_parse.parse(pattern).getwidth()
    except Exception:  # RE2 syntax Python does not know: treat as unbounded
        return None
    return None if high >= 65535 else int(high)


def _unbounded(pattern: str) -> bool:
    return pattern_width(pattern) is None


def check_ast(policy: ast.PolicyAst, sink: DiagnosticSink) -> None:
    Checker(policy, sink).run()
