"""Checks of `when` conditions: names and types of each test, regexes, contradictions."""

from __future__ import annotations

import re2

from dsl import ast
from dsl.check_base import CheckerBase
from dsl.classifiers import CATEGORIES, PII_KINDS
from dsl.diagnostics import did_you_mean
from dsl.terms import normalize
from dsl.tool_names import tool_key
from dsl.vocabulary import FIELDS, MAX_PATTERN_LENGTH, REGEX_FLAGS, TEXTS, TOOL_FIELDS
from dsl.walk import conjuncts, leaves, re2_options, regex_source, unbounded

_HOW_TO_TEST = {"bool": "`{name}` or `not {name}`", "number": "`<`, `>=`, `==` or `in`",
                "string": "`==`, `in` or `matches \"glob\"`"}


class ConditionChecks(CheckerBase):
    def check_condition(self, condition: ast.Condition) -> None:
        for leaf in leaves(condition):
            self.check_leaf(leaf)
        if any(isinstance(leaf, ast.MatchesRegex) and leaf.text.text == "output"
               and unbounded(leaf.pattern) for leaf in leaves(condition)):
            self.warn("unbounded-output-pattern", condition.pos,
                      "output pattern with unbounded length",
                      "while streaming, a match longer than 256 characters may be released "
                      "before it is seen; bound repeats, e.g. `.{0,100}`")

    def check_leaf(self, leaf: ast.Condition) -> None:
        if isinstance(leaf, ast.ContainsList):
            self.check_text(leaf.text)
            found = self.check_list_ref(leaf.list_name)
            if found is not None and found.kind == "tools":
                self.err("tools-list-in-text", leaf.list_name.pos,
                         f"`{found.name.text}` is a `tools` list: it holds tool names",
                         f"test the tool's name: `tool.name in {found.name.text}`")
            elif found is not None and not found.terms:
                self.warn("empty-list-tested", leaf.list_name.pos,
                          f"list `{found.name.text}` is empty",
                          "this test can never be true; add terms")
        elif isinstance(leaf, ast.ContainsLiteral):
            self.check_text(leaf.text)
            if not normalize(leaf.literal.value):
                self.err("empty-contains", leaf.literal.pos, "empty `contains` text",
                         "write the text to look for")
        elif isinstance(leaf, ast.MatchesRegex):
            self.check_regex_test(leaf)
        elif isinstance(leaf, ast.MatchesGlob):
            if leaf.field.text in TEXTS:
                self.err("text-takes-regex", leaf.glob.pos,
                         "texts take a /regex/, not a \"glob\"",
                         f"write `{leaf.field.text} matches /pattern/` or `contains \"...\"`")
            else:
                self.check_field(leaf.field, ("string",))
        elif isinstance(leaf, ast.Compare | ast.InValues | ast.Flag):
            self.check_field_test(leaf)
        elif isinstance(leaf, ast.InList):
            self.check_in_list(leaf)
        elif isinstance(leaf, ast.CategoryTest):
            self.check_category(leaf)
        elif isinstance(leaf, ast.PiiTest):
            self.check_pii_kind(leaf.kind)
            if leaf.text is not None:
                self.check_text(leaf.text)

    def check_field_test(self, leaf: ast.Compare | ast.InValues | ast.Flag) -> None:
        if isinstance(leaf, ast.Compare):
            kind = self.check_field(leaf.field, ("string", "number", "bool"))
            if kind is not None and kind != "number" and leaf.op not in ("==", "!="):
                # One diagnostic: the value's type is moot when the operator is wrong.
                self.err("ordering-needs-number", leaf.pos,
                         f"`{leaf.op}` needs a number; `{leaf.field.text}` is a {kind}",
                         "use `==` or `!=`")
            elif kind is not None:
                self.check_value(leaf.field, kind, leaf.value, leaf.pos)
        elif isinstance(leaf, ast.InValues):
            kind = self.check_field(leaf.field, ("string", "number"))
            if kind is not None:
                for value in leaf.values:
                    if not self.check_value(leaf.field, kind, value, leaf.pos):
                        break
        elif leaf.field.text in TEXTS:
            self.err("text-as-flag", leaf.pos, f"`{leaf.field.text}` is a text; say what to test",
                     f"e.g. `{leaf.field.text} contains any of <list>`")
        else:
            self.check_field(leaf.field, ("bool",))

    def check_in_list(self, leaf: ast.InList) -> None:
        kind = self.check_field(leaf.field, ("string",))
        found = self.check_list_ref(leaf.list_name)
        if kind is not None and leaf.field.text not in TOOL_FIELDS:
            self.err("not-a-tools-list", leaf.field.pos,
                     f"`{leaf.field.text} in <list>` tests a tool; `{leaf.field.text}` is not "
                     "a tool's field", f'write `{leaf.field.text} in ["a", "b"]`')
        elif found is not None and found.kind != "tools":
            self.err("not-a-tools-list", leaf.list_name.pos,
                     f"`{found.name.text}` is a {found.kind} of terms, not a `tools` list",
                     f'declare the names with `tools {found.name.text} = ["delete_*", ...]`')
        elif found is not None and not found.terms:
            self.warn("empty-list-tested", leaf.list_name.pos,
                      f"list `{found.name.text}` is empty",
                      "this test can never be true; add tool names")

    def check_category(self, leaf: ast.CategoryTest) -> None:
        if leaf.category.value not in CATEGORIES:
            self.err("unknown-category", leaf.category.pos,
                     f"unknown category {leaf.category.value!r}",
                     did_you_mean(leaf.category.value, CATEGORIES))
        if leaf.threshold is not None and not 0 <= leaf.threshold <= 1:
            self.err("score-out-of-range", leaf.pos,
                     f"category score {leaf.threshold:g} is outside 0..1",
                     "scores are between 0 and 1, e.g. `>= 0.8`")
        if leaf.text is not None:
            self.check_text(leaf.text)

    def check_pii_kind(self, kind: ast.Name) -> None:
        if kind.text != "any" and kind.text not in PII_KINDS:
            self.err("unknown-pii-kind", kind.pos, f"unknown PII kind `{kind.text}`",
                     did_you_mean(kind.text, (*PII_KINDS, "any")))

    def check_field(self, name: ast.Name, allowed: tuple[str, ...]) -> str | None:
        if name.text not in FIELDS:
            if name.text in TEXTS:
                self.err("text-is-not-a-field", name.pos,
                         f"`{name.text}` is a text, not a request field",
                         "test texts with `contains` or `matches /regex/`")
            else:
                # `tool.arguments` for `tool_arguments`: a tool's texts are candidates too.
                candidates = (*FIELDS, "tool_arguments", "tool_result") if name.text.startswith(
                    "tool") else FIELDS
                self.err("unknown-field", name.pos, f"unknown field `{name.text}`",
                         did_you_mean(name.text, candidates))
            return None
        kind = FIELDS[name.text][0]
        if kind not in allowed:
            self.err("field-type", name.pos,
                     f"`{name.text}` is a {kind}; this test needs a {' or '.join(allowed)}",
                     f"test a {kind} with " + _HOW_TO_TEST[kind].format(name=name.text))
            return None
        return kind

    def check_value(self, field: ast.Name, kind: str, value: object, pos: ast.Pos) -> bool:
        actual = "bool" if isinstance(value, bool) else "number" if isinstance(
            value, float) else "string"
        if actual == kind:
            return True
        example = {"string": '"text"', "number": "42", "bool": "true"}[kind]
        self.err("type-mismatch", pos,
                 f"type mismatch: `{field.text}` is a {kind}, compared with a {actual}",
                 f"write a {kind}, e.g. {example}")
        return False

    def check_regex_test(self, leaf: ast.MatchesRegex) -> None:
        if leaf.text.text in FIELDS and FIELDS[leaf.text.text][0] == "string":
            self.err("field-takes-glob", leaf.pos,
                     f"`{leaf.text.text}` takes a \"glob\", not a /regex/",
                     f'write `{leaf.text.text} matches "gpt-4*"`')
        else:
            self.check_text(leaf.text)
        bad_flags = sorted(set(leaf.flags) - set(REGEX_FLAGS))
        if bad_flags:
            self.err("unknown-regex-flag", leaf.pos, f"unknown regex flag `{''.join(bad_flags)}`",
                     "flags are i (ignore case), m (multi-line), s (dot matches newline)")
            return
        if len(leaf.pattern) > MAX_PATTERN_LENGTH:
            self.err("pattern-too-long", leaf.pos,
                     f"pattern longer than {MAX_PATTERN_LENGTH} characters",
                     "split it into several rules or use a term list")
            return
        try:
            re2.compile(regex_source(leaf.pattern, leaf.flags), re2_options())
        except re2.error as error:
            detail = error.args[0].decode() if error.args and isinstance(
                error.args[0], bytes) else str(error)
            self.err("non-linear-regex", leaf.pos,
                     f"pattern is not a linear-time (RE2) regex: {detail}",
                     "RE2 has no backreferences or lookaround, which guarantees linear-time "
                     "matching; rewrite without them")

    def check_negated_tool_tests(self, rule: ast.Rule, condition: ast.Condition) -> None:
        """A `tool.*` test is false without a tool call, so `not` of one is true on every
        ordinary request: say so, unless the rule also requires a tool call."""
        if any(positive and _reads_tool(literal) for literal, positive in conjuncts(condition)):
            return
        for node in _negations(condition):
            if _reads_tool(node.operand):
                self.warn("negated-tool-test", node.pos,
                          f"rule `{rule.name.text}` also fires on every request that is no "
                          "tool call: a `tool.*` test is false there, and `not` makes it true",
                          'require a tool call as well, e.g. `tool.name matches "*" and not '
                          '(...)`, or use `!=`')
                return

    def check_contradictions(self, rule: ast.Rule, condition: ast.Condition) -> None:
        """Conjunctions that can never be true: `x == a and x == b`, `x > 5 and x < 3`, ..."""
        equal: dict[str, tuple[object, ast.Condition]] = {}
        low: dict[str, float] = {}
        high: dict[str, float] = {}
        for literal, positive in conjuncts(condition):
            field, value = None, None
            if isinstance(literal, ast.Compare) and literal.op == "==" and positive:
                field, value = literal.field.text, literal.value
            elif isinstance(literal, ast.Flag):
                field, value = literal.field.text, positive
            elif isinstance(literal, ast.Compare) and positive and isinstance(literal.value, float):
                name, bound = literal.field.text, literal.value
                if literal.op in (">", ">="):
                    low[name] = max(low.get(name, -1e300), bound + 1e-9 * (literal.op == ">"))
                elif literal.op in ("<", "<="):
                    high[name] = min(high.get(name, 1e300), bound - 1e-9 * (literal.op == "<"))
            if field is None:
                continue
            if field in TOOL_FIELDS and isinstance(value, str):
                value = tool_key(value)  # compared folded: "Shell" is "shell"
            previous = equal.setdefault(field, (value, literal))
            if previous[0] != value:
                self.err("never-fires", literal.pos, f"rule `{rule.name.text}` can never fire: "
                         f"`{field}` cannot be both {_show(previous[0])} and {_show(value)}",
                         "use `or` (or `in [...]`) for alternatives")
        for field in sorted(set(low) & set(high)):
            if low[field] > high[field]:
                self.err("never-fires", condition.pos, f"rule `{rule.name.text}` can never fire: "
                         f"the bounds on `{field}` leave no possible value",
                         "check the comparison operators")


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return f'"{value}"'


def _reads_tool(condition: ast.Condition) -> bool:
    return any(getattr(getattr(leaf, "field", None), "text", None) in TOOL_FIELDS
               for leaf in leaves(condition))


def _negations(condition: ast.Condition) -> list[ast.Not]:
    if isinstance(condition, ast.And | ast.Or):
        return _negations(condition.left) + _negations(condition.right)
    if isinstance(condition, ast.Not):
        return [condition, *_negations(condition.operand)]
    return []
