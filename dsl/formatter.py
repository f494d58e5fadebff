"""AST -> canonical `.pol` source (`python -m dsl fmt`).

Canonical means: two-space indent, one statement per line, settings first in a fixed order, then
lists, rules, rollout and quotas in source order; lists longer than a line get one term per line.
Comments are kept: each is placed, on its own line, before the statement it preceded.
"""

from __future__ import annotations

import json

from dsl import ast

_SETTING_ORDER = ("name", "description", "owner", "classification", "default", "on_error",
                  "escalation_path", "refusal_message", "escalation_message",
                  "rewrite_instruction", "summary_instruction")
_PRECEDENCE = {ast.Or: 1, ast.And: 2, ast.Not: 3}


def quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def _value(value: ast.Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _number(value)
    return quote(value)


def format_condition(node: ast.Condition, parent: int = 0) -> str:
    rank = _PRECEDENCE.get(type(node), 4)
    if isinstance(node, ast.Or | ast.And):
        word = "or" if isinstance(node, ast.Or) else "and"
        # Left-associative: the right operand of the same operator needs brackets.
        text = f"{format_condition(node.left, rank)} {word} {format_condition(node.right, rank + 1)}"
    elif isinstance(node, ast.Not):
        text = f"not {format_condition(node.operand, rank)}"
    else:
        text = _leaf(node)
    return f"({text})" if rank < parent else text


def _leaf(node: ast.Condition) -> str:
    if isinstance(node, ast.ContainsList):
        return f"{node.text.text} contains any of {node.list_name.text}"
    if isinstance(node, ast.ContainsLiteral):
        return f"{node.text.text} contains {quote(node.literal.value)}"
    if isinstance(node, ast.MatchesRegex):
        return f"{node.text.text} matches /{node.pattern.replace('/', chr(92) + '/')}/{node.flags}"
    if isinstance(node, ast.MatchesGlob):
        return f"{node.field.text} matches {quote(node.glob.value)}"
    if isinstance(node, ast.Compare):
        return f"{node.field.text} {node.op} {_value(node.value)}"
    if isinstance(node, ast.InValues):
        return f"{node.field.text} in [{', '.join(_value(v) for v in node.values)}]"
    if isinstance(node, ast.InList):
        return f"{node.field.text} in {node.list_name.text}"
    if isinstance(node, ast.Flag):
        return node.field.text
    if isinstance(node, ast.CategoryTest):
        text = f"category {quote(node.category.value)}"
        if node.op is not None and node.threshold is not None:
            text += f" {node.op} {_number(node.threshold)}"
        return text + (f" in {node.text.text}" if node.text else "")
    if isinstance(node, ast.PiiTest):
        return f"pii {node.kind.text}" + (f" in {node.text.text}" if node.text else "")
    if isinstance(node, ast.Always):
        return "message_count >= 0"
    raise TypeError(f"not a condition: {node!r}")


def _term_list(terms: tuple[ast.Text, ...], used: int) -> str:
    inline = "[" + ", ".join(quote(t.value) for t in terms) + "]"
    if len(inline) + used <= 96:
        return inline
    return "[\n" + "".join(f"  {quote(t.value)},\n" for t in terms) + "]"


def _item_lines(item: ast.Item) -> list[str]:
    if isinstance(item, ast.Setting):
        value = quote(item.value.value) if isinstance(item.value, ast.Text) else item.value.text
        return [f"{item.key} {value}"]
    if isinstance(item, ast.TermList):
        head = f"{item.kind} {item.name.text}"
        if item.text is not None:
            head += f" on {item.text.text}"
        if item.reason is not None:
            head += f" reason {item.reason.text}"
        return f"{head} = {_term_list(item.terms, len(head) + 5)}".split("\n")
    if isinstance(item, ast.Rule):
        lines = [f"rule {item.name.text} {{"]
        lines += [f"  when {format_condition(c)}" for c in item.conditions]
        for action in item.actions:
            text = f"  then {action.decision.text}"
            if action.reason is not None:
                text += f" reason {action.reason.text}"
            if action.message is not None:
                text += f" message {quote(action.message.value)}"
            if action.instruction is not None:
                text += f" instruction {quote(action.instruction.value)}"
            lines.append(text)
        for redaction in item.redactions:
            if isinstance(redaction, ast.RedactPii):
                lines.append("  redact pii " + ", ".join(k.text for k in redaction.kinds))
            elif redaction.lists:
                lines.append("  redact terms of " + ", ".join(n.text for n in redaction.lists))
            else:
                lines.append("  redact matched terms")
        return [*lines, "}"]
    if isinstance(item, ast.RolloutDecl):
        lines = ["rollout {"]
        for stage in item.stages:
            where = f"target {quote(stage.target.value)}" if stage.target else "otherwise"
            pct = f" {_number(stage.percentage)}%" if stage.percentage is not None else ""
            lines.append(f"  {where} {stage.mode.text}{pct}")
        if item.auto_rollback is not None:
            lines.append("  auto_rollback {")
            for setting in item.auto_rollback:
                raw = setting.value
                shown = ", ".join(n.text for n in raw) if isinstance(raw, tuple) else _value(raw)
                lines.append(f"    {setting.key.text} {shown}")
            lines.append("  }")
        return [*lines, "}"]
    assert isinstance(item, ast.QuotaDecl)
    lines = [f"quota {item.subject.text} {{"]
    lines += [f"  {lim.unit.text} {_number(lim.limit)} per {lim.window.text}" for lim in item.limits]
    return [*lines, "}"]


def _single(item: ast.Item) -> list[ast.Item]:
    return [item]


def format_policy(policy: ast.PolicyAst) -> str:
    comments = sorted(policy.comments)
    out: list[str] = []

    def flush_comments(before_line: int, indent: str) -> None:
        while comments and comments[0][0] < before_line:
            out.append(indent + comments.pop(0)[1].rstrip())

    flush_comments(policy.pos.line if policy.pos is not ast.NOWHERE else 10**9, "")
    flush_comments(policy.version.pos.line + 1 if policy.version.pos is not ast.NOWHERE else 1, "")
    out.append(f"policy {policy.version.text} {quote(policy.policy_id.value)} {{")
    settings = sorted((i for i in policy.items if isinstance(i, ast.Setting)),
                      key=lambda s: _SETTING_ORDER.index(s.key))
    groups: list[list[ast.Item]] = [
        list(settings),
        [i for i in policy.items if isinstance(i, ast.TermList)],
        *[_single(item) for item in policy.items if not isinstance(item, ast.Setting | ast.TermList)],
    ]
    first_group = True
    for group in groups:
        if not group:
            continue
        if not first_group:
            out.append("")
        first_group = False
        for item in group:
            flush_comments(item.pos.line, "  ")
            out.extend(("  " + line) if line else "" for line in _item_lines(item))
    flush_comments(10**9, "  ")
    out.append("}")
    return "\n".join(out) + "\n"
