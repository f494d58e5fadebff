"""Small walks over conditions and regex helpers, shared by the checker, compiler and evaluator."""

from __future__ import annotations

from collections.abc import Iterator

import re2

from dsl import ast


def re2_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    return options


def regex_source(pattern: str, flags: str) -> str:
    return f"(?{flags})" + pattern if flags else pattern


def leaves(condition: ast.Condition) -> Iterator[ast.Condition]:
    if isinstance(condition, ast.And | ast.Or):
        yield from leaves(condition.left)
        yield from leaves(condition.right)
    elif isinstance(condition, ast.Not):
        yield from leaves(condition.operand)
    else:
        yield condition


def texts_of(condition: ast.Condition) -> set[str]:
    found = set()
    for leaf in leaves(condition):
        if isinstance(leaf, ast.ContainsList | ast.ContainsLiteral | ast.MatchesRegex):
            found.add(leaf.text.text)
        elif isinstance(leaf, ast.CategoryTest | ast.PiiTest):
            found.add(leaf.text.text if leaf.text else "input")
    return found


def conjuncts(condition: ast.Condition) -> Iterator[tuple[ast.Condition, bool]]:
    """The literals a conjunction is made of, each with its sign (False under a `not`)."""
    if isinstance(condition, ast.And):
        yield from conjuncts(condition.left)
        yield from conjuncts(condition.right)
    elif isinstance(condition, ast.Not) and not isinstance(condition.operand, ast.And | ast.Or):
        yield condition.operand, False
    elif not isinstance(condition, ast.Or | ast.Not):
        yield condition, True


def pattern_width(pattern: str) -> int | None:
    """Longest possible match of a pattern, or None when unbounded or unknown."""
    import re._parser as sre_parse

    try:
        _, high = sre_parse.parse(pattern).getwidth()
    except Exception:  # RE2 syntax Python does not know: treat as unbounded
        return None
    return None if high >= 65535 else int(high)


def unbounded(pattern: str) -> bool:
    return pattern_width(pattern) is None
