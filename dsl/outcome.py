"""A compiled rule, and what one evaluation pass over rules found: shared by the compiler and
the output monitor (which runs the same rules on a stream's windows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dsl.conditions import Test
from dsl.decision import Redactor


@dataclass(frozen=True)
class CompiledRule:
    rule_id: str
    stage: str  # "input" | "output"
    test: Test
    decision: str
    reason: str | None
    message: str | None
    instruction: str | None
    redactor: Redactor | None
    stream_safe: bool  # may be decided on a window of a stream (no `not` over output tests)


@dataclass
class Outcome:
    """What one evaluation pass found, before it becomes a Decision."""

    fired: list[tuple[CompiledRule, list[tuple[str, Any]]]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    allowlist_hits: list[str] = field(default_factory=list)
    extra_categories: list[str] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)  # rules that wait for the output
