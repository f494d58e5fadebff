"""Tool calls as policy facts: the one call being decided, how its name is compared, and which
tools a policy refuses whatever their arguments (so `tools/list` can hide them).

Tool names are identifiers, not prose: they are compared whole (never as words of a text), after
folding case, compatibility forms (full-width letters), invisible characters, accents and
look-alike letters, as texts are (dsl/fold.py). `Delete_Records`, a full-width spelling and a
`delete_records` with a Cyrillic `e` are one name to a policy; a deny rule cannot be dodged by
respelling, and an upstream that tells them apart gets the stricter reading. The characters of a
name are never glob syntax: only the policy's own patterns are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dsl import ast
from dsl.conditions import EvalContext
from dsl.decision import RequestFacts
from dsl.tool_names import glob_matcher as glob_matcher
from dsl.tool_names import tool_key as tool_key
from dsl.vocabulary import OUTPUT_TEXTS, STATIC_FIELDS
from dsl.walk import leaves, texts_of

if TYPE_CHECKING:
    from dsl.compiler import CompiledPolicy
    from dsl.outcome import CompiledRule

#: What `input` reads of a tool call: its name on the first line, then the arguments' text (the
#: convention MCP `tools/call` governance has always had, so existing policies keep working).
TOOL_INPUT_SEPARATOR = "\n"


def tool_facts(base: RequestFacts, name: str, server: str | None,
               arguments_text: str) -> RequestFacts:
    """`base` deciding one tool call: its name and server, `tool_arguments` its arguments'
    text, and `input` the name on the first line followed by that text."""
    return dataclasses.replace(
        base, tool_name=name, tool_server=server, tool_arguments_text=arguments_text,
        input_text=name + TOOL_INPUT_SEPARATOR + arguments_text)


def is_static(condition: ast.Condition) -> bool:
    """The condition reads only fields fixed for one tool and caller (no text, no count)."""
    return all(_static_leaf(leaf) for leaf in leaves(condition))


def _static_leaf(leaf: ast.Condition) -> bool:
    field = getattr(leaf, "field", None)
    return isinstance(leaf, ast.Compare | ast.InValues | ast.InList | ast.MatchesGlob
                      | ast.Flag) and isinstance(field, ast.Name) and (
        field.text in STATIC_FIELDS)


def _settled_before_texts(condition: ast.Condition) -> bool:
    """At the input stage, the condition's value depends on static fields only: every other
    test reads an answer's text, unknown then."""
    return all(_static_leaf(leaf) or (texts_of(leaf) and texts_of(leaf) <= OUTPUT_TEXTS)
               for leaf in leaves(condition))


@dataclass(frozen=True)
class ToolGate:
    """The rules that settle, from a tool's name alone, that every call of it is refused.

    `refusals`: refusing rules that read only static fields (`is_static`). `rescues`, for a
    policy whose `default` is refuse: the rules that could keep a call from that default at
    the input stage (every rule that does not refuse); None when one of them reads a request
    text, so that only the arguments can tell.
    """

    refusals: tuple[CompiledRule, ...]
    rescues: tuple[CompiledRule, ...] | None

    @property
    def filters(self) -> bool:
        """Some tool may be always refused (else listing need not ask)."""
        return bool(self.refusals) or self.rescues is not None


def tool_gate(policy: ast.PolicyAst, rules: tuple[CompiledRule, ...], default: str) -> ToolGate:
    conditions = {rule.name.text: rule.conditions[0] for rule in policy.items
                  if isinstance(rule, ast.Rule) and rule.conditions}
    refusals = tuple(r for r in rules if r.decision == "refuse" and r.rule_id in conditions
                     and is_static(conditions[r.rule_id]))
    others = tuple(r for r in rules if r.decision != "refuse")
    settled = default == "refuse" and all(
        r.rule_id in conditions and _settled_before_texts(conditions[r.rule_id])
        for r in others)
    return ToolGate(refusals, others if settled else None)


def policy_always_refuses_tool(policy: CompiledPolicy, facts: RequestFacts) -> bool:
    """Whether every call of the tool in `facts` (tool_name, tool_server, target, user and
    project filled in; no text needed) is refused, whatever its arguments: a refusing rule that
    tests nothing but those fields fires, or the policy's default is refuse and no rule that
    could allow the call fires before its answer (`ToolGate`).

    A rule that cannot be evaluated (a field it needs is missing) proves nothing. Whether the
    refusal is enforced (the rollout stage of the target) is the caller's to know.
    """
    gate = policy.tool_gate
    context = EvalContext(facts, None, {})
    if policy.run_rules(gate.refusals, context).fired:
        return True
    if gate.rescues is None:
        return False
    outcome = policy.run_rules(gate.rescues, context)
    return not outcome.fired and not outcome.errors
