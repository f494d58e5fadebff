"""What every part of the checker shares: the sink, the lists and settings seen, name lookups."""

from __future__ import annotations

from dsl import ast
from dsl.decision import DECISIONS
from dsl.diagnostic_codes import CODES
from dsl.diagnostics import DiagnosticSink, did_you_mean
from dsl.vocabulary import FIELDS, TEXTS


class CheckerBase:
    def __init__(self, policy: ast.PolicyAst, sink: DiagnosticSink) -> None:
        self.policy = policy
        self.sink = sink
        self.lists: dict[str, ast.TermList] = {}
        self.settings: dict[str, ast.Setting] = {}
        self.used_lists: set[str] = set()

    def err(self, code: str, pos: ast.Pos, message: str, hint: str | None = None) -> None:
        assert code in CODES, code
        self.sink.error(pos.line, pos.column, message, hint, code=code)

    def warn(self, code: str, pos: ast.Pos, message: str, hint: str | None = None) -> None:
        assert code in CODES, code
        self.sink.warning(pos.line, pos.column, message, hint, code=code)

    def check_decision(self, name: ast.Name) -> bool:
        if name.text in DECISIONS:
            return True
        self.err("unknown-decision", name.pos, f"unknown decision `{name.text}`",
                 did_you_mean(name.text, DECISIONS))
        return False

    def check_text(self, name: ast.Name) -> bool:
        if name.text in TEXTS:
            return True
        if name.text in FIELDS:
            self.err("field-is-not-a-text", name.pos,
                     f"`{name.text}` is a request field, not a text",
                     f"texts are {', '.join(TEXTS)}; compare fields with `==`, `in` or `matches`")
        else:
            self.err("unknown-text", name.pos, f"unknown text `{name.text}`",
                     did_you_mean(name.text, TEXTS))
        return False

    def check_list_ref(self, name: ast.Name) -> ast.TermList | None:
        found = self.lists.get(name.text)
        if found is not None or name.text in self.policy.lost_lists:
            self.used_lists.add(name.text)
            return found  # a list lost to a syntax error was reported there
        hint = did_you_mean(name.text, self.lists)
        self.err("unknown-list", name.pos, f"unknown list `{name.text}`", hint)
        # The list the typo meant is not "never used": that would only repeat this error.
        self.used_lists.update(n for n in self.lists if hint == f"did you mean `{n}`?")
        return None
