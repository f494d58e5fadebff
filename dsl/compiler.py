"""Checked AST -> CompiledPolicy: closures built once; deciding does no parsing."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from dsl import ast
from dsl.checker import pattern_width
from dsl.classifiers import Classification
from dsl.conditions import ConditionCompiler, EvalContext, EvaluationError, PatternSet
from dsl.decision import (
    CATEGORY_SURFACES,
    Decision,
    Redactor,
    RequestFacts,
)
from dsl.declarations import Quotas, Rollout, quotas_from_ast, rollout_from_ast
from dsl.fold import term_keys
from dsl.holdback import HoldBack, pattern_start
from dsl.instructions import DEFAULT_INSTRUCTIONS
from dsl.outcome import CompiledRule, Outcome
from dsl.stages import leaves, stream_safe, texts_of
from dsl.terms import TermMatcher
from dsl.tools import tool_gate
from dsl.verdict import PolicyVoice, combine
from dsl.vocabulary import CATEGORY_WINDOW, OUTPUT_TEXTS, PII_WINDOW, UNBOUNDED_PATTERN_WINDOW


@dataclass(frozen=True)
class RuleTrace:
    """How one rule was decided: `stage` is where ("input" or "output"), None when it was not
    decided, and `note` then says why."""

    rule_id: str
    fired: bool
    decision: str
    tests: tuple[tuple[str, bool | str], ...]
    error: str | None = None
    stage: str | None = None
    note: str | None = None


class CompiledPolicy:
    def __init__(self, policy: ast.PolicyAst, source: str, explain: bool = False) -> None:
        from dsl.formatter import format_condition  # the formatter imports nothing of ours back

        self.source = source
        self._ast = policy
        self.policy_id = policy.policy_id.value
        settings = {s.key: s.value for s in policy.items if isinstance(s, ast.Setting)}

        def text(key: str, default: str | None = None) -> str | None:
            value = settings.get(key)
            if value is None:
                return default
            return value.value if isinstance(value, ast.Text) else value.text

        self.name = text("name", self.policy_id) or self.policy_id
        self.description = text("description", "") or ""
        self.owner = text("owner")
        self.classification = text("classification", "internal") or "internal"
        self.default = text("default", "allow") or "allow"
        self.on_error = text("on_error", "refuse") or "refuse"
        self.escalation_path = text("escalation_path")
        self._voice = PolicyVoice(
            default=self.default, on_error=self.on_error, escalation_path=self.escalation_path,
            texts=MappingProxyType({k: text(k, DEFAULT_INSTRUCTIONS.get(k)) for k in (
                "refusal_message", "escalation_message", "rewrite_instruction",
                "summary_instruction")}))
        self.rollout: Rollout = rollout_from_ast(
            [i for i in policy.items if isinstance(i, ast.RolloutDecl)])
        self.quotas: Quotas = quotas_from_ast(
            [i for i in policy.items if isinstance(i, ast.QuotaDecl)])

        matchers, tool_lists, self._allowlist = _term_lists(policy)
        self._pattern_sets: dict[str, PatternSet] = {}
        conditions = ConditionCompiler(matchers, self._pattern_sets,
                                       format_condition if explain else None, tool_lists)
        self.rules: tuple[CompiledRule, ...] = tuple(
            self._compile_rule(rule, conditions, matchers)
            for rule in policy.items if isinstance(rule, ast.Rule))
        for pattern_set in self._pattern_sets.values():
            pattern_set.build()
        #: The rules that refuse a tool on its name alone (dsl/tools.py: tools/list hides it).
        self.tool_gate = tool_gate(policy, self.rules, self.default)
        self._output_rules = tuple(r for r in self.rules if r.stage == "output")
        allowlist_on_output = self._allowlist is not None and self._allowlist[1] == "output"
        self.has_output_rules = bool(self._output_rules) or allowlist_on_output
        # The most any output test can need held back, and the plan of the least (holdback.py).
        self.output_window = self._window(policy, matchers) if self.has_output_rules else 0
        self.hold_back = self._hold_back(policy, matchers)
        self._explainer: CompiledPolicy | None = self if explain else None

    def _compile_rule(self, rule: ast.Rule, conditions: ConditionCompiler,
                      matchers: dict[str, tuple[str, TermMatcher]]) -> CompiledRule:
        condition = rule.conditions[0]
        action = rule.actions[0] if rule.actions else ast.Action(ast.Name("allow"))
        redactor = None
        for redaction in rule.redactions:
            if isinstance(redaction, ast.RedactPii):
                kinds = {k.text for k in redaction.kinds}
                part = Redactor(frozenset() if "any" in kinds else frozenset(kinds))
            else:
                names = [n.text for n in redaction.lists] or [
                    leaf.list_name.text for leaf in leaves(condition)
                    if isinstance(leaf, ast.ContainsList)]
                part = Redactor(None, tuple(matchers[n][1] for n in dict.fromkeys(names)))
            redactor = part if redactor is None else redactor.merged_with(part)
        return CompiledRule(
            rule.name.text, "output" if texts_of(condition) & OUTPUT_TEXTS else "input",
            conditions.compile(condition), action.decision.text,
            action.reason.text if action.reason else None,
            action.message.value if action.message else None,
            action.instruction.value if action.instruction else None,
            redactor, stream_safe(condition))

    def _window(self, policy: ast.PolicyAst, matchers: dict[str, tuple[str, TermMatcher]]) -> int:
        window = 1
        if self._allowlist is not None and self._allowlist[1] == "output":
            window = self._allowlist[0].max_length + 1
        for rule in (r for r in policy.items if isinstance(r, ast.Rule)):
            if "output" not in texts_of(rule.conditions[0]):
                continue
            for leaf in leaves(rule.conditions[0]):
                if isinstance(leaf, ast.ContainsList) and leaf.text.text == "output":
                    window = max(window, matchers[leaf.list_name.text][1].max_length + 1)
                elif isinstance(leaf, ast.ContainsLiteral) and leaf.text.text == "output":
                    window = max(window, max(map(len, term_keys(leaf.literal.value))) + 1)
                elif isinstance(leaf, ast.MatchesRegex) and leaf.text.text == "output":
                    width = pattern_width(leaf.pattern)
                    window = max(window, UNBOUNDED_PATTERN_WINDOW if width is None else width + 1)
                elif isinstance(leaf, ast.PiiTest) and leaf.text and leaf.text.text == "output":
                    window = max(window, PII_WINDOW)
                elif isinstance(leaf, ast.CategoryTest) and leaf.text and leaf.text.text == "output":
                    window = max(window, CATEGORY_WINDOW)
            if rule.redactions:
                window = max(window, PII_WINDOW)
        return window

    def _hold_back(self, policy: ast.PolicyAst,
                   matchers: dict[str, tuple[str, TermMatcher]]) -> HoldBack:
        terms: list[TermMatcher] = []
        literals: list[str] = []
        pii: set[str] | None = None
        window = 0
        patterns: list[tuple[int, re.Pattern[str]]] = []
        for rule in (r for r in policy.items if isinstance(r, ast.Rule)):
            if "output" not in texts_of(rule.conditions[0]):
                continue
            for leaf in leaves(rule.conditions[0]):
                read = getattr(leaf, "text", None)
                if not isinstance(read, ast.Name) or read.text != "output":
                    continue
                if isinstance(leaf, ast.ContainsList):
                    terms.append(matchers[leaf.list_name.text][1])
                elif isinstance(leaf, ast.ContainsLiteral):
                    literals.append(leaf.literal.value)
                elif isinstance(leaf, ast.MatchesRegex):
                    width = pattern_width(leaf.pattern)
                    span = UNBOUNDED_PATTERN_WINDOW if width is None else width + 1
                    first = pattern_start(leaf.pattern, leaf.flags)
                    if first is None:
                        window = max(window, span)
                    else:
                        patterns.append((span, first))
                elif isinstance(leaf, ast.PiiTest):
                    pii = _with_pii_kind(pii, leaf.kind.text)
                elif isinstance(leaf, ast.CategoryTest):
                    window = max(window, CATEGORY_WINDOW)
            for redaction in rule.redactions:
                if isinstance(redaction, ast.RedactPii):
                    for kind in redaction.kinds:
                        pii = _with_pii_kind(pii, kind.text)
            compiled = next((r for r in self._output_rules if r.rule_id == rule.name.text), None)
            if compiled is not None and compiled.redactor is not None:
                terms.extend(compiled.redactor.term_matchers)
        if literals:
            # A literal is matched anywhere in the text, not as a whole word.
            terms.append(TermMatcher(literals, whole_words=False))
        return HoldBack(terms, pii, window, patterns)

    # --- evaluation
    def run_rules(self, rules: Iterable[CompiledRule], ctx: EvalContext) -> Outcome:
        outcome = Outcome()
        for rule in rules:
            evidence: list[tuple[str, Any]] = []
            try:
                fired = rule.test(ctx, evidence)
            except EvaluationError as error:
                if ctx.output is None and rule.stage == "output":
                    # Before the output, a missing field may still be short-circuited by an
                    # output test: the output stage decides, and reports the error if it stays.
                    outcome.undecided.append(rule.rule_id)
                else:
                    outcome.errors.append((rule.rule_id, str(error)))
                continue
            except Exception as error:  # a rule that cannot be evaluated never silently allows
                outcome.errors.append((rule.rule_id, f"{type(error).__name__}: {error}"))
                continue
            if fired:
                outcome.fired.append((rule, evidence))
            elif fired is None:
                outcome.undecided.append(rule.rule_id)
        return outcome

    def check_allowlist(self, ctx: EvalContext, stage: str, outcome: Outcome) -> None:
        if self._allowlist is None or (self._allowlist[1] == "output") != (stage == "output"):
            return
        matcher, text, reason = self._allowlist
        hits = ctx.list_hits(matcher, text)
        outcome.allowlist_hits.extend(hits)
        if not hits:
            outcome.fired.append((_ALLOWLIST_RULES[reason], []))

    def evaluate_input(self, facts: RequestFacts, classification: Classification) -> Decision:
        """Every rule is tried before the upstream call; a rule that tests the output is decided
        here when the input alone settles it (`input contains X or output contains X` with X in
        the input), and otherwise waits for the output stage."""
        ctx = EvalContext(facts, classification, self._pattern_sets)
        outcome = self.run_rules(self.rules, ctx)
        self.check_allowlist(ctx, "input", outcome)
        if facts.flagged_categories and facts.surface in CATEGORY_SURFACES:
            from dsl.classifiers import CATEGORY_THRESHOLD

            flagged = sorted(c for c in facts.flagged_categories
                             if classification.categories.get(c, 0.0) >= CATEGORY_THRESHOLD)
            if flagged:
                outcome.fired.append((_FLAGGED_RULE, [("category", c) for c in flagged]))
        return self.decide(outcome, "input", facts.input_text, None)

    def evaluate_output(self, facts: RequestFacts, output_text: str,
                        decision: Decision, classification: Classification | None = None
                        ) -> Decision:
        """`classification` (optional) is the input's, with the output's in `by_text`."""
        ctx = EvalContext(facts, classification, self._pattern_sets, output=output_text)
        outcome = self.run_rules(self._output_rules, ctx)
        self.check_allowlist(ctx, "output", outcome)
        return self.decide(outcome, "output", output_text, decision)

    def output_monitor(self, facts: RequestFacts, decision: Decision,
                       enforced: bool = True) -> Any:
        """Incremental output evaluation; with `enforced` False (shadow), nothing is held back
        for a refusal and the stream is never stopped: only the decision changes."""
        from dsl.monitor import OutputMonitor

        return OutputMonitor(self, facts, decision, enforced)

    def output_rules(self, stream_safe_only: bool) -> tuple[CompiledRule, ...]:
        if not stream_safe_only:
            return self._output_rules
        return tuple(r for r in self._output_rules if r.stream_safe)

    def decide(self, outcome: Outcome, stage: str, text: str, base: Decision | None,
               count_redactions: bool = True) -> Decision:
        """The stage's decision from what its rules found and the earlier stage's decision
        (dsl/verdict.py)."""
        return combine(self._voice, outcome, stage, text, base, count_redactions)

    # --- explanation (CLI `eval --explain`)
    def explain(self, facts: RequestFacts, classification: Classification,
                output_text: str | None = None) -> tuple[Decision, list[RuleTrace]]:
        """The decision, by the same stages the gateway runs, and for each rule the stage that
        decided it (or why none did). A rule is shown as fired only if the decision counts it."""
        if self._explainer is None:
            self._explainer = CompiledPolicy(self._ast, self.source, explain=True)
        explainer = self._explainer
        traces: dict[str, RuleTrace] = {}
        for rule in explainer.rules:
            traces[rule.rule_id] = _trace(explainer, rule, EvalContext(
                facts, classification, explainer._pattern_sets), "input")
        decision = explainer.evaluate_input(facts, classification)
        stopped = decision.decision in ("refuse", "escalate")
        for rule in explainer.rules:
            if traces[rule.rule_id].stage is not None:
                continue
            if output_text is None:
                note = ("needs the output (give the response: `--output-text`, or `output` in "
                        "the request)")
            elif stopped:
                note = f"not run: the request was stopped at input ({decision.decision})"
            else:
                traces[rule.rule_id] = _trace(explainer, rule, EvalContext(
                    facts, classification, explainer._pattern_sets, output=output_text), "output")
                continue
            traces[rule.rule_id] = dataclasses.replace(traces[rule.rule_id], note=note)
        if output_text is not None and not stopped:
            decision = explainer.evaluate_output(facts, output_text, decision)
        return decision, list(traces.values())


def _term_lists(policy: ast.PolicyAst) -> tuple[
        dict[str, tuple[str, TermMatcher]], dict[str, tuple[str, ...]],
        tuple[TermMatcher, str, str] | None]:
    """The policy's term lists: a matcher for each allow/deny list by name, the tool lists by
    name, and the allowlist that vets whole texts (its matcher, the text it reads, its reason)
    when one has terms (the last such one)."""
    lists = [i for i in policy.items if isinstance(i, ast.TermList) and i.kind != "tools"]
    tool_lists = {i.name.text: tuple(t.value for t in i.terms) for i in policy.items
                  if isinstance(i, ast.TermList) and i.kind == "tools"}
    matchers = {tl.name.text: ("allow" if tl.kind == "allowlist" else "deny",
                               TermMatcher([t.value for t in tl.terms])) for tl in lists}
    allowlist: tuple[TermMatcher, str, str] | None = None
    for tl in lists:
        if tl.kind == "allowlist" and tl.terms:
            allowlist = (matchers[tl.name.text][1], tl.text.text if tl.text else "input",
                         tl.reason.text if tl.reason else "REFUSE")
    return matchers, tool_lists, allowlist


def _trace(policy: CompiledPolicy, rule: CompiledRule, ctx: EvalContext, stage: str) -> RuleTrace:
    ctx.trace = []
    outcome = policy.run_rules([rule], ctx)
    error = outcome.errors[0][1] if outcome.errors else None
    decided = None if outcome.undecided else stage
    return RuleTrace(rule.rule_id, bool(outcome.fired), rule.decision, tuple(ctx.trace), error,
                     decided, None)


def _pseudo_rule(rule_id: str, reason: str | None) -> CompiledRule:
    return CompiledRule(rule_id, "input", lambda ctx, ev: True, "refuse", reason, None, None,
                        None, True)


class _AllowlistRules(dict[str, CompiledRule]):
    def __missing__(self, reason: str) -> CompiledRule:
        rule = self[reason] = _pseudo_rule("allowlist", None if reason == "REFUSE" else reason)
        return rule


_ALLOWLIST_RULES = _AllowlistRules()
_FLAGGED_RULE = _pseudo_rule("flagged_categories", None)


def _with_pii_kind(kinds: set[str] | None, kind: str) -> set[str]:
    """The PII kinds to hold back for; empty means every kind."""
    if kind == "any" or kinds == set():
        return set()
    return (kinds or set()) | {kind}
