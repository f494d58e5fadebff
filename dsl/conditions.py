"""Conditions -> closures, and the per-evaluation context they read from.

Everything expensive happens once per evaluation and text, whatever the number of rules: one
normalisation, one automaton scan per (list, text), one RE2 Set scan per text, one classification.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable
from typing import Any

import re2

from dsl import ast
from dsl.checker import re2_options, regex_source
from dsl.classifiers import CATEGORY_THRESHOLD, Classification, classify, find_pii
from dsl.decision import CATEGORY_SURFACES, RequestFacts
from dsl.fold import term_keys, without_invisibles
from dsl.stages import texts_of
from dsl.terms import TermMatcher, normalize
from dsl.tool_names import glob_matcher, tool_key
from dsl.vocabulary import FIELDS, OUTPUT_TEXTS, TOOL_FIELDS

Evidence = list[tuple[str, Any]]  # ("allow" | "deny", [terms]) or ("category", name)
# True, False, or None when the test needs a text that is not known yet (the output, at the input
# stage).
Test = Callable[["EvalContext", Evidence], bool | None]

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}


class EvaluationError(Exception):
    """A rule could not be evaluated (e.g. a request field is missing).

    Caused by the request lacking a fact the policy tests; the policy's `on_error` decides, and
    the message is reported in `Decision.error`.  Nothing to fix in code.
    """


class EvalContext:
    """Caches for one evaluation; `open_end` says more output may follow (streaming), and
    `output_context` that the output's first character is released text, there only as the word
    boundary: a term hit starting on it is a fragment of a word, never a new hit."""

    __slots__ = ("_classes", "_hits", "_normalized", "_pii", "_regex", "facts", "open_end",
                 "output", "output_context", "pattern_sets", "trace")

    def __init__(self, facts: RequestFacts, classification: Classification | None,
                 pattern_sets: dict[str, PatternSet], output: str | None = None,
                 open_end: bool = False) -> None:
        self.facts = facts
        self.output = output
        self.open_end = open_end
        self.output_context = False
        self.pattern_sets = pattern_sets
        self._classes: dict[str, Classification] = {}
        if classification is not None:
            self._classes.update(classification.by_text)
            self._classes["input"] = classification
        self._normalized: dict[str, str] = {}
        self._hits: dict[tuple[int, str], list[str]] = {}
        self._regex: dict[str, frozenset[int]] = {}
        self._pii: dict[str, frozenset[str]] = {}
        self.trace: list[tuple[str, bool | str]] | None = None

    def raw(self, text: str) -> str:
        if text == "input":
            return self.facts.input_text
        if text == "last_user":
            return self.facts.last_user_text
        if text == "system":
            return self.facts.system_text
        if text == "tool_arguments":
            return self.facts.tool_arguments_text
        if self.output is None:
            raise EvaluationError(f"the {text} text is not known at the input stage")
        if text == "tool_result":
            return self.facts.tool_result_text
        return self.output

    def normalized(self, text: str) -> str:
        # Keyed by content: input and last_user are often the very same string.
        raw = self.raw(text)
        found = self._normalized.get(raw)
        if found is None:
            found = self._normalized[raw] = normalize(raw)
        return found

    def list_hits(self, matcher: TermMatcher, text: str) -> list[str]:
        key = (id(matcher), text)
        found = self._hits.get(key)
        if found is None:
            on_output = text == "output"
            found = self._hits[key] = matcher.hits(
                self.normalized(text), open_end=self.open_end and on_output,
                min_start=1 if on_output and self.output_context else 0)
        return found

    def regex_matches(self, text: str) -> frozenset[int]:
        found = self._regex.get(text)
        if found is None:
            # Invisible characters removed, nothing else: a zero-width space cannot split a
            # match, and the pattern keeps its meaning (case and accents as written).
            found = self._regex[text] = self.pattern_sets[text].match(
                without_invisibles(self.raw(text)))
        return found

    def classification(self, text: str) -> Classification:
        found = self._classes.get(text)
        if found is None:
            pinned = self._classes["input"].pinned if "input" in self._classes else {}
            found = self._classes[text] = classify(self.raw(text)).with_pinned(pinned)
        return found

    def pii_kinds(self, text: str) -> frozenset[str]:
        found = self._pii.get(text)
        if found is None:
            findings = self._classes[text].pii if text in self._classes else find_pii(
                self.raw(text))
            found = self._pii[text] = frozenset(f.kind for f in findings)
        return found


def _both(left: Test, right: Test) -> Test:
    def both(ctx: EvalContext, ev: Evidence) -> bool | None:
        found: Evidence = []
        first = left(ctx, found)
        if first is False:
            return False
        second = right(ctx, found)
        if second is False:
            return False
        if first and second:
            ev.extend(found)
            return True
        return None
    return both


def _either(left: Test, right: Test) -> Test:
    def either(ctx: EvalContext, ev: Evidence) -> bool | None:
        first = left(ctx, ev)  # a part that is not true adds no evidence
        if first:
            return True
        second = right(ctx, ev)
        if second:
            return True
        return None if first is None or second is None else False
    return either


def _negated(inner: Test) -> Test:
    def negated(ctx: EvalContext, ev: Evidence) -> bool | None:
        # Evidence gathered under `not` proves nothing, so it is thrown away.
        result = inner(ctx, [])
        return None if result is None else not result
    return negated


def _unknown_before_output(test: Test) -> Test:
    def on_output(ctx: EvalContext, ev: Evidence) -> bool | None:
        return None if ctx.output is None else test(ctx, ev)
    return on_output


class PatternSet:
    """Every pattern a policy applies to one text, in ONE RE2 Set: one linear scan per text."""

    def __init__(self) -> None:
        self.sources: list[str] = []
        self._set: re2.Set | None = None

    def add(self, pattern: str, flags: str) -> int:
        self.sources.append(regex_source(pattern, flags))
        return len(self.sources) - 1

    def build(self) -> None:
        if not self.sources:
            return
        compiled = re2.Set.SearchSet(re2_options())
        for source in self.sources:
            compiled.Add(source)
        compiled.Compile()
        self._set = compiled

    def match(self, text: str) -> frozenset[int]:
        if self._set is None:
            return frozenset()
        return frozenset(self._set.Match(text) or ())


class ConditionCompiler:
    def __init__(self, matchers: dict[str, tuple[str, TermMatcher]],
                 pattern_sets: dict[str, PatternSet],
                 describe: Callable[[ast.Condition], str] | None = None,
                 tool_lists: dict[str, tuple[str, ...]] | None = None) -> None:
        self.matchers = matchers  # list name -> ("allow" | "deny", matcher)
        self.tool_lists = tool_lists or {}  # `tools` list name -> its globs
        self.pattern_sets = pattern_sets
        self.describe = describe

    def compile(self, node: ast.Condition) -> Test:
        """A closure giving True, False or None (unknown: it needs a text not known yet).

        Kleene's three-valued logic: `x or y` is true as soon as one side is, `x and y` false as
        soon as one side is, and `not` of unknown is unknown. Evidence is kept only from the
        parts that made the result true.
        """
        if isinstance(node, ast.And):
            return _both(self.compile(node.left), self.compile(node.right))
        if isinstance(node, ast.Or):
            return _either(self.compile(node.left), self.compile(node.right))
        if isinstance(node, ast.Not):
            return _negated(self.compile(node.operand))
        test = self.leaf(node)
        if texts_of(node) & OUTPUT_TEXTS:
            test = _unknown_before_output(test)
        if self.describe is None:
            return test
        text = self.describe(node)

        def traced(ctx: EvalContext, ev: Evidence) -> bool | None:
            try:
                result = test(ctx, ev)
            except EvaluationError as error:
                if ctx.trace is not None:
                    ctx.trace.append((text, f"error: {error}"))
                raise
            if ctx.trace is not None:
                ctx.trace.append((text, "unknown" if result is None else result))
            return result
        return traced

    def leaf(self, node: ast.Condition) -> Test:
        if isinstance(node, ast.Always):
            return lambda ctx, ev: True
        if isinstance(node, ast.ContainsList):
            kind, matcher = self.matchers[node.list_name.text]
            text = node.text.text

            def contains_list(ctx: EvalContext, ev: Evidence) -> bool:
                hits = ctx.list_hits(matcher, text)
                if hits:
                    ev.append((kind, hits))
                return bool(hits)
            return contains_list
        if isinstance(node, ast.ContainsLiteral):
            keys, text = term_keys(node.literal.value), node.text.text
            if len(keys) == 1:
                literal = keys[0]
                return lambda ctx, ev: literal in ctx.normalized(text)
            return lambda ctx, ev: any(key in ctx.normalized(text) for key in keys)
        if isinstance(node, ast.MatchesRegex):
            text = node.text.text
            index = self.pattern_sets.setdefault(text, PatternSet()).add(node.pattern, node.flags)
            return lambda ctx, ev: index in ctx.regex_matches(text)
        if isinstance(node, ast.CategoryTest):
            return self.category(node)
        if isinstance(node, ast.PiiTest):
            kind = node.kind.text
            text = node.text.text if node.text else "input"
            if kind == "any":
                return lambda ctx, ev: bool(ctx.pii_kinds(text))
            return lambda ctx, ev: kind in ctx.pii_kinds(text)
        return self.field_test(node)

    def category(self, node: ast.CategoryTest) -> Test:
        name = node.category.value
        compare = _OPS[node.op or ">="]
        threshold = node.threshold if node.threshold is not None else CATEGORY_THRESHOLD
        text = node.text.text if node.text else "input"

        def category(ctx: EvalContext, ev: Evidence) -> bool:
            if ctx.facts.surface not in CATEGORY_SURFACES:
                return False  # categories apply to chat completions and messages only
            score = ctx.classification(text).categories.get(name, 0.0)
            if compare(score, threshold):
                ev.append(("category", name))
                return True
            return False
        return category

    def field_test(self, node: ast.Condition) -> Test:
        field = node.field.text  # type: ignore[union-attr]
        if field in TOOL_FIELDS:
            return self.tool_field_test(node)
        getter = FIELDS[field][1]

        def value(facts: RequestFacts) -> Any:
            found = getter(facts)
            if found is None:
                raise EvaluationError(f"request field `{field}` is missing")
            return found

        if isinstance(node, ast.Flag):
            return lambda ctx, ev: bool(value(ctx.facts))
        if isinstance(node, ast.MatchesGlob):
            matcher = re.compile(fnmatch.translate(node.glob.value)).match
            return lambda ctx, ev: matcher(value(ctx.facts)) is not None
        if isinstance(node, ast.InValues):
            allowed = frozenset(node.values)
            return lambda ctx, ev: value(ctx.facts) in allowed
        assert isinstance(node, ast.Compare)
        compare, expected = _OPS[node.op], node.value
        return lambda ctx, ev: compare(value(ctx.facts), expected)

    def tool_field_test(self, node: ast.Condition) -> Test:
        """A test of `tool.name` or `tool.server`: folded (dsl/tools.py), and false (never
        missing) when no tool call, or no server, is being decided."""
        getter = FIELDS[node.field.text][1]  # type: ignore[union-attr]
        matches: Callable[[str], bool]
        if isinstance(node, ast.InList):
            matches = glob_matcher(self.tool_lists.get(node.list_name.text, ()))
        elif isinstance(node, ast.MatchesGlob):
            matches = glob_matcher([node.glob.value])
        elif isinstance(node, ast.InValues):
            allowed = frozenset(tool_key(str(v)) for v in node.values)
            matches = allowed.__contains__
        elif isinstance(node, ast.Compare):
            expected, equal = tool_key(str(node.value)), node.op == "=="

            def matches(value: str) -> bool:
                return (value == expected) == equal
        else:  # a bare flag: is there one?
            matches = bool

        def tool_field(ctx: EvalContext, ev: Evidence) -> bool:
            value = getter(ctx.facts)
            return value is not None and matches(tool_key(value))
        return tool_field
