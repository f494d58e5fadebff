"""`.pol` source -> AST.

The LALR parser is built once, lazily (never at import time).  A file that does not parse whole is
re-parsed one statement region at a time (dsl/recovery.py) so that every bad statement gets its
own diagnostic and the good ones still reach the semantic checker.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import lark
from lark import Token, Transformer, v_args
from lark.exceptions import UnexpectedInput

from dsl import ast
from dsl.diagnostics import DiagnosticSink
from dsl.recovery import line_index, recover

#: grammar/policy.lark, installed as package data of `dsl.grammar` (see pyproject.toml). A
#: source tree reads its own copy: an editable install maps `dsl.grammar` to the one checkout it
#: was installed from, which is not this one when several checkouts share the environment.
_SOURCE_GRAMMAR = Path(__file__).resolve().parents[1] / "grammar" / "policy.lark"
GRAMMAR: Traversable = (_SOURCE_GRAMMAR if _SOURCE_GRAMMAR.is_file()
                        else importlib.resources.files("dsl.grammar").joinpath("policy.lark"))
_START_SYMBOLS = ["start", "header_open", "item", "rule_body", "rollout_body", "quota_body"]


@functools.cache
def policy_parser() -> lark.Lark:
    return lark.Lark(
        GRAMMAR.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        start=_START_SYMBOLS,
        propagate_positions=True,
        maybe_placeholders=True,
    )


def _pos(meta: Any) -> ast.Pos:
    if getattr(meta, "empty", True):
        return ast.NOWHERE
    return ast.Pos(meta.line, meta.column)


def _tpos(token: Token) -> ast.Pos:
    return ast.Pos(token.line or 1, token.column or 1)


def _name(token: Token) -> ast.Name:
    return ast.Name(str(token), _tpos(token))


@v_args(meta=True)
class ToAst(Transformer[Token, Any]):
    """One method per named alternative of grammar/policy.lark."""

    def __init__(self, sink: DiagnosticSink) -> None:
        super().__init__()
        self.sink = sink

    # --- tokens -> values
    def _text(self, token: Token) -> ast.Text:
        raw = str(token)
        try:
            value = json.loads(raw)
        except ValueError:
            self.sink.error(token.line or 1, token.column or 1, "invalid escape in string",
                            "strings use JSON escapes: \\\" \\\\ \\n \\t \\uXXXX",
                            code="invalid-escape")
            value = raw[1:-1]
        return ast.Text(value, _tpos(token))

    # --- header and settings
    def policy(self, meta: Any, ch: list[Any]) -> ast.PolicyAst:
        version, policy_id = ch[0]
        return ast.PolicyAst(version, policy_id, tuple(ch[1:]), pos=_pos(meta))

    def header(self, meta: Any, ch: list[Any]) -> tuple[ast.Name, ast.Text]:
        return _name(ch[0]), self._text(ch[1])

    def header_open(self, meta: Any, ch: list[Any]) -> tuple[ast.Name, ast.Text]:
        return ch[0]  # type: ignore[no-any-return]

    def _setting(self, key: str, meta: Any, ch: list[Any]) -> ast.Setting:
        token = ch[0]
        value = self._text(token) if token.type == "STRING" else _name(token)
        return ast.Setting(key, value, _pos(meta))

    def name_setting(self, meta: Any, ch: list[Any]) -> ast.Setting:
        return self._setting("name", meta, ch)

    def description_setting(self, meta: Any, ch: list[Any]) -> ast.Setting:
        return self._setting("description", meta, ch)

    def owner_setting(self, meta: Any, ch: list[Any]) -> ast.Setting:
        return self._setting("owner", meta, ch)

    def classification_setting(self, meta: Any, ch: list[Any]) -> ast.Setting:
        return self._setting("classification", meta, ch)

    def default_setting(self, meta: Any, ch: list[Any]) -> ast.Setting:
        return self._setting("default", meta, ch)

    def on_error_setting(self, meta: Any, ch: list[Any]) -> ast.Setting:
        return self._setting("on_error", meta, ch)

    def escalation_path_setting(self, meta: Any, ch: list[Any]) -> ast.Setting:
        return self._setting("escalation_path", meta, ch)

    def refusal_message_setting(self, meta: Any, ch: list[Any]) -> ast.Setting:
        return self._setting("refusal_message", meta, ch)

    def escalation_message_setting(self, meta: Any, ch: list[Any]) -> ast.Setting:
        return self._setting("escalation_message", meta, ch)

    def rewrite_instruction_setting(self, meta: Any, ch: list[Any]) -> ast.Setting:
        return self._setting("rewrite_instruction", meta, ch)

    def summary_instruction_setting(self, meta: Any, ch: list[Any]) -> ast.Setting:
        return self._setting("summary_instruction", meta, ch)

    # --- term lists
    def term_list(self, meta: Any, ch: list[Any]) -> tuple[ast.Text, ...]:
        return tuple(self._text(t) for t in ch if t is not None)

    def list_options(self, meta: Any, ch: list[Any]) -> tuple[ast.Name | None, ast.Name | None]:
        on = _name(ch[0]) if ch[0] is not None else None
        reason = _name(ch[1]) if ch[1] is not None else None
        return on, reason

    def allowlist_decl(self, meta: Any, ch: list[Any]) -> ast.TermList:
        on, reason = ch[1]
        return ast.TermList("allowlist", _name(ch[0]), ch[2], on, reason, _pos(meta))

    def denylist_decl(self, meta: Any, ch: list[Any]) -> ast.TermList:
        return ast.TermList("denylist", _name(ch[0]), ch[1], pos=_pos(meta))

    def list_decl(self, meta: Any, ch: list[Any]) -> ast.TermList:
        return ast.TermList("list", _name(ch[0]), ch[1], pos=_pos(meta))

    def tools_decl(self, meta: Any, ch: list[Any]) -> ast.TermList:
        return ast.TermList("tools", _name(ch[0]), ch[1], pos=_pos(meta))

    # --- rules
    def rule(self, meta: Any, ch: list[Any]) -> ast.Rule:
        items = ch[1:]
        return ast.Rule(
            _name(ch[0]),
            tuple(i[1] for i in items if i[0] == "when"),
            tuple(i[1] for i in items if i[0] == "then"),
            tuple(i[1] for i in items if i[0] == "redact"),
            _pos(meta),
        )

    def when_clause(self, meta: Any, ch: list[Any]) -> tuple[str, ast.Condition]:
        return "when", ch[0]

    def then_clause(self, meta: Any, ch: list[Any]) -> tuple[str, ast.Action]:
        options: dict[str, Any] = {}
        for key, value in ch[1:]:
            options.setdefault(key, value)
        return "then", ast.Action(_name(ch[0]), pos=_pos(meta), **options)

    def reason_option(self, meta: Any, ch: list[Any]) -> tuple[str, ast.Name]:
        return "reason", _name(ch[0])

    def message_option(self, meta: Any, ch: list[Any]) -> tuple[str, ast.Text]:
        return "message", self._text(ch[0])

    def instruction_option(self, meta: Any, ch: list[Any]) -> tuple[str, ast.Text]:
        return "instruction", self._text(ch[0])

    def redact_pii_clause(self, meta: Any, ch: list[Any]) -> tuple[str, ast.RedactPii]:
        return "redact", ast.RedactPii(tuple(_name(t) for t in ch), _pos(meta))

    def redact_terms_clause(self, meta: Any, ch: list[Any]) -> tuple[str, ast.RedactTerms]:
        return "redact", ast.RedactTerms(tuple(_name(t) for t in ch), _pos(meta))

    def redact_matched_clause(self, meta: Any, ch: list[Any]) -> tuple[str, ast.RedactTerms]:
        return "redact", ast.RedactTerms((), _pos(meta))

    # --- conditions
    def or_cond(self, meta: Any, ch: list[Any]) -> ast.Or:
        return ast.Or(ch[0], ch[1], _pos(meta))

    def and_cond(self, meta: Any, ch: list[Any]) -> ast.And:
        return ast.And(ch[0], ch[1], _pos(meta))

    def not_cond(self, meta: Any, ch: list[Any]) -> ast.Not:
        return ast.Not(ch[0], _pos(meta))

    def contains_list(self, meta: Any, ch: list[Any]) -> ast.ContainsList:
        return ast.ContainsList(_name(ch[0]), _name(ch[1]), _pos(meta))

    def contains_literal(self, meta: Any, ch: list[Any]) -> ast.ContainsLiteral:
        return ast.ContainsLiteral(_name(ch[0]), self._text(ch[1]), _pos(meta))

    def matches_regex(self, meta: Any, ch: list[Any]) -> ast.MatchesRegex:
        raw = str(ch[1])
        end = raw.rindex("/")
        pattern = raw[1:end].replace("\\/", "/")
        return ast.MatchesRegex(_name(ch[0]), pattern, raw[end + 1:], _pos(meta))

    def matches_glob(self, meta: Any, ch: list[Any]) -> ast.MatchesGlob:
        return ast.MatchesGlob(_name(ch[0]), self._text(ch[1]), _pos(meta))

    def compare(self, meta: Any, ch: list[Any]) -> ast.Compare:
        return ast.Compare(_name(ch[0]), str(ch[1]), ch[2], _pos(meta))

    def in_values(self, meta: Any, ch: list[Any]) -> ast.InValues:
        return ast.InValues(_name(ch[0]), tuple(ch[1:]), _pos(meta))

    def in_list(self, meta: Any, ch: list[Any]) -> ast.InList:
        return ast.InList(_name(ch[0]), _name(ch[1]), _pos(meta))

    def flag(self, meta: Any, ch: list[Any]) -> ast.Flag:
        return ast.Flag(_name(ch[0]), _pos(meta))

    def category_test(self, meta: Any, ch: list[Any]) -> ast.CategoryTest:
        op = next((str(t) for t in ch[1:] if t.type == "COMPARE"), None)
        number = next((float(t) for t in ch[1:] if t.type == "NUMBER"), None)
        text = next((_name(t) for t in ch[1:] if t.type == "NAME"), None)
        return ast.CategoryTest(self._text(ch[0]), op, number, text, _pos(meta))

    def pii_test(self, meta: Any, ch: list[Any]) -> ast.PiiTest:
        text = _name(ch[1]) if len(ch) > 1 else None
        return ast.PiiTest(_name(ch[0]), text, _pos(meta))

    def string_value(self, meta: Any, ch: list[Any]) -> str:
        return self._text(ch[0]).value

    def number_value(self, meta: Any, ch: list[Any]) -> float:
        return float(ch[0])

    def true_value(self, meta: Any, ch: list[Any]) -> bool:
        return True

    def false_value(self, meta: Any, ch: list[Any]) -> bool:
        return False

    # --- rollout and quotas
    def rollout(self, meta: Any, ch: list[Any]) -> ast.RolloutDecl:
        stages = tuple(c for c in ch if isinstance(c, ast.StageDecl))
        rollbacks = [c for c in ch if isinstance(c, tuple)]
        return ast.RolloutDecl(stages, rollbacks[0] if rollbacks else None, _pos(meta))

    def target_stage(self, meta: Any, ch: list[Any]) -> ast.StageDecl:
        pct = float(ch[2]) if len(ch) > 2 else None
        return ast.StageDecl(self._text(ch[0]), _name(ch[1]), pct, _pos(meta))

    def default_stage(self, meta: Any, ch: list[Any]) -> ast.StageDecl:
        pct = float(ch[1]) if len(ch) > 1 else None
        return ast.StageDecl(None, _name(ch[0]), pct, _pos(meta))

    def auto_rollback(self, meta: Any, ch: list[Any]) -> tuple[ast.RollbackSetting, ...]:
        return tuple(ch)

    def rollback_enabled(self, meta: Any, ch: list[Any]) -> ast.RollbackSetting:
        return ast.RollbackSetting(ast.Name("enabled", _pos(meta)), ch[0], _pos(meta))

    def rollback_decisions(self, meta: Any, ch: list[Any]) -> ast.RollbackSetting:
        names = tuple(_name(t) for t in ch)
        return ast.RollbackSetting(ast.Name("rollback_decisions", _pos(meta)), names, _pos(meta))

    def rollback_number(self, meta: Any, ch: list[Any]) -> ast.RollbackSetting:
        return ast.RollbackSetting(_name(ch[0]), float(ch[1]), _pos(meta))

    def quota(self, meta: Any, ch: list[Any]) -> ast.QuotaDecl:
        return ast.QuotaDecl(_name(ch[0]), tuple(ch[1:]), _pos(meta))

    def quota_limit(self, meta: Any, ch: list[Any]) -> ast.QuotaLimitDecl:
        return ast.QuotaLimitDecl(_name(ch[0]), float(ch[1]), _name(ch[2]), _pos(meta))


def parse_source(source: str, sink: DiagnosticSink) -> ast.PolicyAst | None:
    """Parse a whole file; on a syntax error fall back to statement-by-statement recovery."""
    parser = policy_parser()
    to_ast = ToAst(sink)
    comments: list[tuple[int, str]] = [
        (m.start(), m.group()) for m in re.finditer(r'#[^\n]*|"(?:\\.|[^"\\\n])*"', source)
        if m.group().startswith("#")
    ]
    line_of = line_index(source)
    comment_lines = tuple((line_of(offset), text) for offset, text in comments)
    try:
        tree = parser.parse(source, start="start")
    except UnexpectedInput:
        return recover(parser, source, sink, to_ast, comment_lines)
    policy: ast.PolicyAst = to_ast.transform(tree)
    return ast.PolicyAst(policy.version, policy.policy_id, policy.items, comment_lines, policy.pos)
