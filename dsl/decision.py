"""The values that cross the gateway <-> dsl boundary: request facts in, decisions out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from dsl.classifiers import find_pii, redact_pii
from dsl.terms import TermMatcher, redact_terms, term_spans

DecisionName = Literal["allow", "rewrite", "summary", "escalate", "refuse"]
DECISIONS: tuple[str, ...] = ("allow", "rewrite", "summary", "escalate", "refuse")
SEVERITY = {name: rank for rank, name in enumerate(DECISIONS)}
SURFACES = ("chat.completions", "messages", "responses")
CATEGORY_SURFACES = frozenset({"chat.completions", "messages"})


@dataclass(frozen=True)
class RequestFacts:
    """What a policy may know about one request (no I/O: the gateway fills it in)."""

    surface: str = "chat.completions"
    model: str = ""
    target: str | None = None  # None: the surface name (docs/management.md)
    policy_user: str | None = None
    project_id: str | None = None
    message_count: int = 0
    estimated_input_tokens: int = 0
    max_output_tokens: int | None = None
    has_tools: bool = False
    stream: bool = False
    input_text: str = ""
    last_user_text: str = ""
    system_text: str = ""
    flagged_categories: frozenset[str] = frozenset()
    # The arguments of the tool calls in the request (assistant `tool_calls`, `tool_use.input`,
    # `function_call` items), joined; also part of `input_text`. The `tool_arguments` text.
    tool_arguments_text: str = ""
    # The one tool call being decided (an MCP tools/call or a model-issued call), else None.
    tool_name: str | None = None
    tool_server: str | None = None
    tool_result_text: str = ""

    @property
    def effective_target(self) -> str:
        return self.target or self.surface


@dataclass(frozen=True)
class Redactor:
    """Redacts PII kinds (`pii_kinds` None = none, empty = every kind) and listed terms."""

    pii_kinds: frozenset[str] | None
    term_matchers: tuple[TermMatcher, ...] = ()

    def apply(self, text: str) -> tuple[str, dict[str, int]]:
        counts: dict[str, int] = {}
        if self.pii_kinds is not None:
            text, pii_counts = redact_pii(text, sorted(self.pii_kinds) or None)
            counts.update({k: v for k, v in pii_counts.items() if v})
        if self.term_matchers:
            text, term_count = redact_terms(text, self.term_matchers)
            if term_count:
                counts["term"] = term_count
        return text, counts

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where apply() would replace text (so a stream never cuts through one)."""
        found: list[tuple[int, int]] = []
        if self.pii_kinds is not None:
            found.extend((f.start, f.end) for f in find_pii(text)
                         if not self.pii_kinds or f.kind in self.pii_kinds)
        if self.term_matchers:
            found.extend(term_spans(text, self.term_matchers))
        return sorted(found)

    def merged_with(self, other: Redactor | None) -> Redactor:
        if other is None:
            return self
        kinds: frozenset[str] | None
        if self.pii_kinds is None or other.pii_kinds is None:
            kinds = self.pii_kinds if other.pii_kinds is None else other.pii_kinds
        elif not self.pii_kinds or not other.pii_kinds:
            kinds = frozenset()
        else:
            kinds = self.pii_kinds | other.pii_kinds
        matchers = self.term_matchers + tuple(
            m for m in other.term_matchers if m not in self.term_matchers)
        return Redactor(kinds, matchers)


@dataclass(frozen=True)
class Obligations:
    """What the gateway must do to carry out the decision."""

    redactor: Redactor | None = None
    instruction: str | None = None
    message: str | None = None
    escalation_path: str | None = None


_EMPTY: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True)
class Decision:
    decision: str = "allow"
    reason_code: str = "ALLOW"
    stage: Literal["input", "output"] = "input"
    fired_rules: tuple[str, ...] = ()
    triggered_categories: tuple[str, ...] = ()
    allowlist_hits: tuple[str, ...] = ()
    denylist_hits: tuple[str, ...] = ()
    redacted_spans: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    error: str | None = None
    obligations: Obligations = field(default_factory=Obligations)

    @property
    def severity(self) -> int:
        return SEVERITY[self.decision]

    def summary(self) -> dict[str, object]:
        """The decision fields of the `policy` object a client sees (no obligations)."""
        return {
            "decision": self.decision, "reason_code": self.reason_code, "stage": self.stage,
            "fired_rules": list(self.fired_rules),
            "triggered_categories": list(self.triggered_categories),
            "allowlist_hits": list(self.allowlist_hits),
            "denylist_hits": list(self.denylist_hits),
            "redacted_spans": dict(self.redacted_spans), "error": self.error,
        }
