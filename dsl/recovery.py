"""Syntax errors worth reading, and recovery so one bad statement does not hide the rest.

A file that does not parse whole is re-parsed one statement region at a time (the rest of the
text blanked, so positions stay true); a bad block is re-parsed one inner statement at a time.
Each bad statement gets one diagnostic: a misspelled keyword gets "did you mean", a statement
that ends too early is reported where the missing token belongs.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any

import lark
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from dsl import ast
from dsl.diagnostics import DiagnosticSink

BLOCK_ITEM_START = {"rule": "rule_body", "rollout": "rollout_body", "quota": "quota_body"}
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Strings, regex literals and comments of one line: comments are cut, the others kept whole.
_LINE_TOKENS = re.compile(r'"(?:\\.|[^"\\\n])*"|/(?:\\.|[^/\\\n])+/[a-z]*|#[^\n]*')
_LAST_TOKEN = re.compile(r'("(?:\\.|[^"\\\n])*"|/(?:\\.|[^/\\\n])+/[a-z]*|\w+|\S)\s*$')
_LIST_DECL = re.compile(r"(?:allowlist|denylist|list)\s+([A-Za-z_][A-Za-z0-9_]*)")
_ENDS = {"$END", "RBRACE"}  # a statement may stop here: nothing is missing
# Words that only ever start a statement: a line starting with one is never inside ( ) or [ ],
# so an unclosed `(` or `[` cannot swallow the statements after it.
_STATEMENT_WORDS = frozenset({
    "name", "description", "owner", "classification", "default", "on_error", "escalation_path",
    "refusal_message", "escalation_message", "rewrite_instruction", "summary_instruction",
    "allowlist", "denylist", "list", "rule", "rollout", "quota", "when", "then", "redact",
    "target", "otherwise", "auto_rollback"})


def describe_terminal(parser: lark.Lark, name: str) -> str:
    try:
        term = parser.get_terminal(name)
    except KeyError:
        return name.lower()
    if isinstance(term.pattern, lark.lexer.PatternStr):
        return f"`{term.pattern.value}`"
    return {"NAME": "a name", "FIELD": "a text or field name", "STRING": 'a "string"', "NUMBER": "a number",
            "REGEX": "a /regex/", "COMPARE": "a comparison"}.get(name, name.lower())


def _keywords(parser: lark.Lark, names: set[str]) -> list[str]:
    words = []
    for name in names:
        try:
            pattern = parser.get_terminal(name).pattern
        except KeyError:
            continue
        if isinstance(pattern, lark.lexer.PatternStr) and _WORD.fullmatch(pattern.value):
            words.append(pattern.value)
    return sorted(words)


def previous_token(text: str, offset: int) -> tuple[int, int, str] | None:
    """(line, column just after it, text) of the last token before `offset`, comments skipped."""
    while offset > 0:
        start = text.rfind("\n", 0, offset) + 1
        line = text[start:offset]
        cut = next((m.start() for m in _LINE_TOKENS.finditer(line)
                    if m.group().startswith("#")), len(line))
        code = line[:cut].rstrip()
        if code.strip():
            token = _LAST_TOKEN.search(code)
            shown = token.group(1) if token else code.split()[-1]
            return text.count("\n", 0, start) + 1, len(code) + 1, shown
        offset = start - 1
    return None


def report(parser: lark.Lark, text: str, sink: DiagnosticSink, error: UnexpectedInput) -> None:
    """One diagnostic for a syntax error found while parsing `text` (a region or the file)."""
    line, column = max(error.line, 1), max(error.column, 1)
    if isinstance(error, UnexpectedCharacters):
        sink.error(line, column, f"unexpected character `{error.char}`",
                   "strings use double quotes, regexes /slashes/, comments start with `#`",
                   code="unexpected-character")
        return
    if isinstance(error, UnexpectedEOF):
        sink.error(line, column, "unexpected end of file",
                   "a `{` is not closed; every block ends with `}`", code="unexpected-eof")
        return
    assert isinstance(error, UnexpectedToken)
    token = error.token
    expected = set(error.expected)
    described = sorted({describe_terminal(parser, t) for t in expected - _ENDS})
    close = difflib.get_close_matches(str(token), _keywords(parser, expected), n=1, cutoff=0.7)
    if token.type != "$END" and _WORD.fullmatch(str(token)) and close:
        sink.error(line, column, f"unknown keyword `{token}`", f"did you mean `{close[0]}`?",
                   code="unknown-keyword")
        return
    at = len(text) if token.type == "$END" else (token.start_pos or 0)
    before = previous_token(text, at)
    if before is not None and described and not expected & _ENDS and (
            token.type == "$END" or before[0] < line):
        what = " or ".join(described) if len(described) <= 3 else (
            "one of " + ", ".join(described))
        sink.error(before[0], before[1], f"missing {what} after `{before[2]}`",
                   "add it at the end of this line", code="missing-token")
        return
    shown = "end of statement" if token.type == "$END" else f"`{token}`"
    sink.error(line, column, f"syntax error: unexpected {shown}",
               f"expected {', '.join(described)}" if described else None, code="syntax-error")


def regions(source: str) -> tuple[int, list[tuple[int, int, int]]]:
    """(end of header, [(start, end, depth)]) of the depth 1 and 2 statements of a file.

    A statement starts at the start of a line and ends where the next statement of its depth (or
    shallower) starts or its block closes.  Strings, comments and /regex/ literals are skipped
    so their braces do not count.
    """
    braces, brackets, i, n = 0, 0, 0, len(source)
    header_end = -1
    events: list[tuple[int, int, bool]] = []  # (offset, depth, is_start); closes: depth before
    at_line_start, last_word = True, ""
    while i < n:
        ch = source[i]
        if ch == "\n":
            at_line_start = True
            i += 1
            continue
        if ch in " \t\r":
            i += 1
            continue
        word = _WORD.match(source, i)
        if at_line_start and word and word.group() in _STATEMENT_WORDS:
            brackets = 0
        if at_line_start and braces + brackets in (1, 2) and ch not in "}])":
            events.append((i, braces + brackets, True))
        at_line_start = False
        if ch == "#":
            while i < n and source[i] != "\n":
                i += 1
            continue
        if ch == '"' or (ch == "/" and last_word == "matches"):
            i += 1
            while i < n and source[i] not in (ch, "\n"):
                i += 2 if source[i] == "\\" else 1
            i += 1
            last_word = ""
            continue
        if word:
            last_word = word.group()
            i = word.end()
            continue
        if ch == "{":
            braces += 1
            if braces == 1 and header_end < 0:
                header_end = i + 1
        elif ch in "[(":
            brackets += 1
        elif ch in "}])":
            events.append((i, braces + brackets, False))
            if ch == "}":
                braces, brackets = max(braces - 1, 0), 0
            else:
                brackets = max(brackets - 1, 0)
        last_word = ""
        i += 1
    return header_end, _statement_spans(events, n)


def _statement_spans(events: list[tuple[int, int, bool]], n: int) -> list[tuple[int, int, int]]:
    """(start, end, depth) of each statement: it ends at the next start or close at its depth
    or shallower (`events` as `regions` scans them; `n` ends the file)."""
    found = []
    for index, (start, depth, is_start) in enumerate(events):
        if not is_start:
            continue
        end = next((offset for offset, later, _ in events[index + 1:] if later <= depth), n)
        found.append((start, end, depth))
    return found


def line_index(source: str) -> Callable[[int], int]:
    import bisect

    newlines = [i for i, ch in enumerate(source) if ch == "\n"]
    return lambda offset: bisect.bisect_left(newlines, offset) + 1


def recover(parser: lark.Lark, source: str, sink: DiagnosticSink, to_ast: Any,
            comments: tuple[tuple[int, str], ...]) -> ast.PolicyAst | None:
    """Parse statement by statement; every bad statement is reported once, the rest kept."""
    recovery = _Recovery(parser, source, sink, to_ast)
    header_end, statements = regions(source)
    header = recovery.header(header_end)
    items: list[Any] = []
    lost_lists: set[str] = set()
    for start, end, depth in statements:
        if depth != 1:
            continue
        parsed, item = recovery.statement(start, end, statements)
        if parsed:
            items.append(item)
            continue
        declared = _LIST_DECL.match(source, start)
        if declared:
            lost_lists.add(declared.group(1))
    depth_at_end = _final_depth(source)
    if depth_at_end > 0 and not any(d.code == "unexpected-eof" for d in sink.items):
        lines = source.splitlines() or [""]
        sink.error(len(lines), len(lines[-1]) + 1, "unexpected end of file",
                   f"{depth_at_end} block(s) not closed; add `}}`", code="unexpected-eof")
    if header is None:
        return None
    return ast.PolicyAst(header[0], header[1], tuple(items), comments, recovered=True,
                         lost_lists=frozenset(lost_lists))


class _Recovery:
    """Parses one region of a file at a time (the rest blanked, so positions stay true) and
    reports what does not parse."""

    def __init__(self, parser: lark.Lark, source: str, sink: DiagnosticSink, to_ast: Any) -> None:
        self.parser, self.source, self.sink, self.to_ast = parser, source, sink, to_ast
        self.blank = re.sub(r"[^\n]", " ", source)
        self.unclosed = _final_depth(source) > 0

    def attempt(self, start: int, end: int, symbol: str
                ) -> tuple[Any, UnexpectedInput | None, str]:
        text = self.blank[:start] + self.source[start:end] + self.blank[end:]
        try:
            return self.to_ast.transform(self.parser.parse(text, start=symbol)), None, text
        except UnexpectedInput as error:
            return None, error, text

    def header(self, header_end: int) -> tuple[ast.Name, ast.Text] | None:
        if header_end < 0:
            self.sink.error(1, 1, "missing policy header",
                            'a policy starts with `policy v1 "my_policy" {`',
                            code="missing-header")
            return None
        header, error, text = self.attempt(0, header_end, "header_open")
        if error is not None:
            report(self.parser, text, self.sink, error)
        return header

    def statement(self, start: int, end: int, statements: list[tuple[int, int, int]]
                  ) -> tuple[bool, Any]:
        """(True, the item) for a top-level statement that parses; else (False, None), and the
        bad inner statements of its block are reported, or the statement itself if none is."""
        item, error, text = self.attempt(start, end, "item")
        if error is None:
            return True, item
        keyword = _WORD.match(self.source, start)
        inner_symbol = BLOCK_ITEM_START.get(keyword.group() if keyword else "")
        before = len(self.sink.items)
        for inner_start, inner_end, inner_depth in statements:
            if inner_symbol is not None and inner_depth == 2 and start < inner_start < end:
                _, inner_error, inner_text = self.attempt(inner_start, inner_end, inner_symbol)
                if inner_error is not None:
                    self._report_once(inner_text, inner_error, inner_end)
        if len(self.sink.items) == before:
            self._report_once(text, error, end)
        return False, None

    def _report_once(self, text: str, error: UnexpectedInput, end: int) -> None:
        if self.unclosed and end == len(self.source) and isinstance(error, UnexpectedToken) and (
                error.token.type == "$END"):
            return  # the file ends inside this block: reported once, as the end of file
        report(self.parser, text, self.sink, error)


def _final_depth(source: str) -> int:
    stripped = re.sub(r'#[^\n]*|"(?:\\.|[^"\\\n])*"', "", source)
    return max(stripped.count("{") - stripped.count("}"), 0)
