"""Which texts of a request some rule of a policy classifies: only those are sent out."""

from __future__ import annotations

from collections.abc import Iterable

import dsl
from dsl import ast
from dsl.walk import leaves

INPUT_TEXTS = ("input", "last_user", "system")


def category_texts(policy: dsl.CompiledPolicy) -> frozenset[str]:
    """The texts (`input`, `last_user`, `system`, `output`) a category test of `policy` reads.
    Computed once per compiled policy and remembered on it."""
    found = getattr(policy, "_moderation_texts", None)
    if found is None:
        found = frozenset(
            leaf.text.text if leaf.text else "input"
            for item in policy._ast.items if isinstance(item, ast.Rule)
            for condition in item.conditions
            for leaf in leaves(condition) if isinstance(leaf, ast.CategoryTest))
        policy._moderation_texts = found  # type: ignore[attr-defined]
    return found


def texts_needed(policies: Iterable[dsl.CompiledPolicy], *, category_surface: bool,
                 always_blocked: bool, flagged: bool) -> list[str]:
    """The input texts to classify, in a stable order. Always-blocked categories apply on every
    surface and read the whole input; category rules and flagged categories only on the
    category surfaces (docs/classifiers.md)."""
    wanted: set[str] = set()
    if category_surface:
        for policy in policies:
            wanted |= category_texts(policy)
        if flagged:
            wanted.add("input")
    if always_blocked:
        wanted.add("input")
    return [text for text in INPUT_TEXTS if text in wanted]
