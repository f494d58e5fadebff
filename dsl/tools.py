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
from typing import TYPE_CHECKING

from dsl import ast
from dsl.conditions import EvalContext
from dsl.decision import RequestFacts
from dsl.tool_names import glob_matcher as glob_matcher
from dsl.tool_names import tool_key as tool_key
from dsl.vocabulary import STATIC_FIELDS
from dsl.walk import leaves

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
    for leaf in leaves(condition):
        field = getattr(leaf, "field", None)
        if not isinstance(leaf, ast.Compare | ast.InValues | ast.InList | ast.MatchesGlob
                          | ast.Flag) or not isinstance(field, ast.Name) or (
                field.text not in STATIC_FIELDS):
            return False
    return True


def static_refusals(policy: ast.PolicyAst,
                    rules: tuple[CompiledRule, ...]) -> tuple[CompiledRule, ...]:
    """The compiled rules that refuse on static fields alone (see `is_static`)."""
    static = {rule.name.text for rule in policy.items if isinstance(rule, ast.Rule)
              and rule.conditions and is_static(rule.conditions[0])}
    return tuple(r for r in rules if r.rule_id in static and r.decision == "refuse")


def policy_always_refuses_tool(policy: CompiledPolicy, facts: RequestFacts) -> bool:
    """Whether every call of the tool in `facts` (tool_name, tool_server, target, user and
    project filled in; no text needed) is refused by a rule, whatever its arguments.

    Only a refusing rule that tests nothing but those fields counts; a rule that cannot be
    evaluated (a field it needs is missing) proves nothing. Whether the refusal is enforced (the
    rollout stage of the target) is the caller's to know.
    """
    context = EvalContext(facts, None, {})
    outcome = policy.run_rules(policy.static_refusals, context)
    return bool(outcome.fired)
