"""Diagnostics: what the checker reports, and how it is rendered."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Diagnostic:
    file: str
    line: int
    column: int
    severity: Severity
    message: str
    hint: str | None = None
    code: str = ""  # stable identifier, see dsl/diagnostic_codes.py

    def as_dict(self) -> dict[str, object]:
        """The fields the management API returns (its shape is fixed; `code` is not one)."""
        found = asdict(self)
        del found["code"]
        return found

    def render(self, source: str | None = None) -> str:
        """`file:line:col: error: message`, the source line, a caret, then `help: ...`."""
        out = [f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message}"]
        if source is not None:
            lines = source.splitlines()
            if 1 <= self.line <= len(lines):
                text = lines[self.line - 1]
                out.append(f"    {text}")
                caret_at = min(max(self.column - 1, 0), len(text))
                # Tabs keep their width so the caret lines up under the offending column.
                pad = "".join("\t" if ch == "\t" else " " for ch in text[:caret_at])
                out.append(f"    {pad}^")
        if self.hint:
            out.append(f"  help: {self.hint}")
        return "\n".join(out)


class PolicyError(ValueError):
    """The policy source or document is invalid; raised by `compile_policy`.

    Caused by whoever wrote the policy.  Fix every diagnostic in `.diagnostics` (each carries
    file, line, column, severity, message and a hint) and compile again; `python -m dsl check`
    prints them in the usual compiler format.
    """

    def __init__(self, diagnostics: Sequence[Diagnostic], source: str | None = None) -> None:
        self.diagnostics = list(diagnostics)
        self.source = source
        errors = [d for d in self.diagnostics if d.severity == "error"]
        first = errors[0] if errors else (self.diagnostics[0] if self.diagnostics else None)
        summary = f"{len(errors)} error(s)"
        if first is not None:
            summary += f"; first: {first.file}:{first.line}:{first.column}: {first.message}"
        super().__init__(summary)

    def render(self) -> str:
        return "\n".join(d.render(self.source) for d in self.diagnostics)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A `help:` text naming the closest candidate, or listing the valid ones."""
    options = sorted(set(candidates))
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if close:
        return f"did you mean `{close[0]}`?"
    if not options:
        return None
    shown = ", ".join(f"`{o}`" for o in options[:12])
    more = "" if len(options) <= 12 else f" (and {len(options) - 12} more)"
    return f"expected one of {shown}{more}"


class DiagnosticSink:
    """Collects diagnostics for one file; every check appends here instead of raising."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.items: list[Diagnostic] = []

    def error(self, line: int, column: int, message: str, hint: str | None = None, *,
              code: str) -> None:
        self.items.append(Diagnostic(self.filename, line, column, "error", message, hint, code))

    def warning(self, line: int, column: int, message: str, hint: str | None = None, *,
                code: str) -> None:
        self.items.append(Diagnostic(self.filename, line, column, "warning", message, hint, code))

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.items)

    def sorted(self) -> list[Diagnostic]:
        """In source order, each problem once (two checks may reach the same finding)."""
        return sorted(dict.fromkeys(self.items), key=lambda d: (d.line, d.column))
