"""How policies compare tool names (and server names): folded identifiers, globs (dsl/tools.py
says why)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable

from dsl.fold import fold


def tool_key(value: str) -> str:
    """A tool name (or server name, or a pattern for one) as policies compare it."""
    return fold(value, force_skeleton=True)


def glob_matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """True for a value (already a `tool_key`) that one of the globs matches whole; `*`, `?`
    and `[...]` are the only syntax, and nothing else of a pattern is special."""
    sources = [fnmatch.translate(tool_key(p)) for p in patterns]
    if not sources:
        return lambda value: False
    compiled = re.compile("|".join(f"(?:{s})" for s in sources))
    return lambda value: compiled.match(value) is not None
