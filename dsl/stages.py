"""The shape of a condition as it matters for stages: which texts it reads, and whether a
streamed answer can decide it on a window. Shared by the checker and the compiler."""

from __future__ import annotations

from dsl import ast
from dsl.vocabulary import OUTPUT_TEXTS
from dsl.walk import leaves as leaves
from dsl.walk import texts_of


def stream_safe(condition: ast.Condition, negated: bool = False) -> bool:
    """May be decided on a window of a streamed answer: no output test under `not`, and no
    upper bound on an output category score (both need the whole answer)."""
    if isinstance(condition, ast.And | ast.Or):
        return stream_safe(condition.left, negated) and stream_safe(condition.right, negated)
    if isinstance(condition, ast.Not):
        return stream_safe(condition.operand, not negated)
    if not texts_of(condition) & OUTPUT_TEXTS:
        return True
    if isinstance(condition, ast.CategoryTest) and condition.op in ("<", "<=", "==", "!="):
        return False
    return not negated
