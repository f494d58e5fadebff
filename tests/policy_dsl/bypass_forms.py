"""Terms to attack and the spelling tricks to attack them with, all drawn from shipped data.

The terms are those of the example policies plus a sample of dictionary words (Faker's English
word list). The tricks come from Unicode's own data through ICU: the default-ignorable code points,
the nonspacing marks and, for each ASCII letter, the letters of other scripts whose confusable
skeleton is that letter. Nothing here is a hand-typed character table.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

import icu
from faker.providers.lorem.en_US import Provider as EnglishLorem

from dsl import ast
from dsl.api import load
from dsl.fold import plain_char, skeleton_char

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def policy_terms() -> list[str]:
    """Every listed term and `contains` literal of the example policies."""
    found: dict[str, None] = {}
    for path in sorted(POLICIES.glob("*.pol")):
        policy = load(path.read_text(encoding="utf-8"), str(path))[0]
        assert policy is not None, path
        for item in policy.items:
            if isinstance(item, ast.TermList):
                found.update(dict.fromkeys(t.value for t in item.terms))
            elif isinstance(item, ast.Rule):
                for condition in item.conditions:
                    for leaf in _leaves(condition):
                        if isinstance(leaf, ast.ContainsLiteral):
                            found[leaf.literal.value] = None
    return list(found)


def _leaves(node: ast.Condition) -> list[ast.Condition]:
    if isinstance(node, ast.And | ast.Or):
        return _leaves(node.left) + _leaves(node.right)
    if isinstance(node, ast.Not):
        return _leaves(node.operand)
    return [node]


def dictionary_words(count: int = 60, seed: int = 13) -> list[str]:
    words = sorted({w for w in EnglishLorem.word_list if len(w) >= 3 and w.isalpha()})
    return random.Random(seed).sample(words, count)


def _code_points(pattern: str) -> list[str]:
    found = []
    for char in icu.UnicodeSet(pattern):
        found.append(str(char))
    return found


@functools.cache
def invisibles() -> list[str]:
    """Assigned default-ignorable code points: zero-width characters, soft hyphen, word joiner,
    BOM, bidi controls, variation selectors, tag characters, fillers."""
    return _code_points("[[:Default_Ignorable_Code_Point:]&[:Assigned:]]")


@functools.cache
def marks() -> list[str]:
    """Combining marks drawn above or below a letter (a sample of Mn, Unicode's own list)."""
    return _code_points("[[:Mn:]&[:ccc=230:]]")[:200] + _code_points("[[:Mn:]&[:ccc=220:]]")[:100]


@functools.cache
def confusables() -> dict[str, list[str]]:
    """For each ASCII letter, the non-ASCII letters and letter-like symbols that fold to it only
    through the skeleton (not through case, width or an accent, which other tricks cover)."""
    found: dict[str, list[str]] = {}
    for code in range(0x80, 0x20000):
        char = chr(code)
        if char.isspace() or not char.isprintable():
            continue
        target = skeleton_char(char)
        if len(target) == 1 and target.isascii() and target.isalpha() and (
                plain_char(char) != target):
            found.setdefault(target, []).append(char)
    return found


def full_width(char: str) -> str:
    """The full-width form of a printable ASCII character (Unicode places them at a fixed
    offset, U+FF01..U+FF5E)."""
    return chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char
