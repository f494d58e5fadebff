"""The policy AST: what `.pol` source and JSON policy documents both translate into.

The checker validates it and the compiler turns it into closures; nothing downstream knows which
surface syntax a policy came from.  Names (fields, texts, decisions, kinds) are kept as written so
the checker can say "did you mean ..." with the exact position.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pos:
    line: int = 1
    column: int = 1


NOWHERE = Pos(1, 1)


@dataclass(frozen=True)
class Name:
    """An identifier as written, with where it was written."""

    text: str
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class Text:
    """A string literal (already unescaped)."""

    value: str
    pos: Pos = NOWHERE


# --- conditions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainsList:
    text: Name
    list_name: Name
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class ContainsLiteral:
    text: Name
    literal: Text
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class MatchesRegex:
    text: Name
    pattern: str
    flags: str
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class MatchesGlob:
    field: Name
    glob: Text
    pos: Pos = NOWHERE


Value = str | float | bool


@dataclass(frozen=True)
class Compare:
    field: Name
    op: str
    value: Value
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class InValues:
    field: Name
    values: tuple[Value, ...]
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class InList:
    """`field in NAME`: the field's value matches one of the globs of a `tools` list."""

    field: Name
    list_name: Name
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class Flag:
    field: Name
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class CategoryTest:
    category: Text
    op: str | None
    threshold: float | None
    text: Name | None
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class PiiTest:
    kind: Name
    text: Name | None
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class Not:
    operand: Condition
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class And:
    left: Condition
    right: Condition
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class Or:
    left: Condition
    right: Condition
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class Always:
    """A condition that is always true (only produced by JSON translation)."""

    pos: Pos = NOWHERE


Condition = (
    ContainsList | ContainsLiteral | MatchesRegex | MatchesGlob | Compare | InValues | InList
    | Flag | CategoryTest | PiiTest | Not | And | Or | Always
)


# --- rules and declarations -------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    decision: Name
    reason: Name | None = None
    message: Text | None = None
    instruction: Text | None = None
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class RedactPii:
    kinds: tuple[Name, ...]
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class RedactTerms:
    """`lists` empty means "the lists this rule's conditions test" (`redact matched terms`)."""

    lists: tuple[Name, ...]
    pos: Pos = NOWHERE


Redaction = RedactPii | RedactTerms


@dataclass(frozen=True)
class Rule:
    name: Name
    conditions: tuple[Condition, ...]  # one per `when`; the checker wants exactly one
    actions: tuple[Action, ...]  # one per `then`; at most one
    redactions: tuple[Redaction, ...]
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class TermList:
    kind: str  # "allowlist" | "denylist" | "list" | "tools" (globs of tool names)
    name: Name
    terms: tuple[Text, ...]
    text: Name | None = None  # allowlist only: which text must contain a term
    reason: Name | None = None  # allowlist only: reason code of its refusal
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class Setting:
    key: str  # name, description, owner, classification, default, on_error, escalation_path, ...
    value: Name | Text
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class StageDecl:
    target: Text | None  # None: every other target
    mode: Name
    percentage: float | None
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class RollbackSetting:
    key: Name
    value: Value | tuple[Name, ...]
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class RolloutDecl:
    stages: tuple[StageDecl, ...]
    auto_rollback: tuple[RollbackSetting, ...] | None
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class QuotaLimitDecl:
    unit: Name
    limit: float
    window: Name
    pos: Pos = NOWHERE


@dataclass(frozen=True)
class QuotaDecl:
    subject: Name
    limits: tuple[QuotaLimitDecl, ...]
    pos: Pos = NOWHERE


Item = Setting | TermList | Rule | RolloutDecl | QuotaDecl


@dataclass(frozen=True)
class PolicyAst:
    version: Name
    policy_id: Text
    items: tuple[Item, ...]
    comments: tuple[tuple[int, str], ...] = field(default=(), compare=False)
    pos: Pos = NOWHERE
    recovered: bool = field(default=False, compare=False)  # some statements had syntax errors
    # Lists whose declaration had a syntax error: using them is not a second error.
    lost_lists: frozenset[str] = field(default=frozenset(), compare=False)
