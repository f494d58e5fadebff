"""How much of a streamed answer the output monitor must still hold back.

The monitor releases everything except the shortest suffix that could still become (part of) a
match of an output test. Each kind of test says where its earliest live partial match starts:

- term lists and literals (exact): the longest suffix of the folded text (dsl/fold.py) that is a
  path in the list's automaton, i.e. the start of a key's prefix that reaches the end of the
  text. A whole-word key can only start at a word start, so only word starts are tried. Folding
  collapses a whitespace run to one space and drops invisible characters, so "project␠␠\u200b"
  is a live prefix of the key "project falcon". The folded start maps back to the original text
  (fold_with_origins), so the held suffix begins at the first original character of that key.
- PII (a prefix test per kind, an over-approximation): the longest trailing run of characters
  that a value of that kind is written with (an e-mail's local part and domain, a key's body,
  digits and the separators of phones and cards, an IBAN's upper-case groups, a private key's
  header). A run is held up to PII_WINDOW characters, the window every PII test had before:
  values are recognised within that (a JWT whose first segment is longer is not).
- patterns (`matches /.../`, a bound): RE2 has no partial-match API, so a pattern has a window,
  its longest possible match (or UNBOUNDED_PATTERN_WINDOW when unbounded), counted in folded
  characters as before. When the characters a match can begin with are known (pattern_start),
  only the window's text from the first such character is held, else the whole window.
- categories (a bound): a score has no prefix test; CATEGORY_WINDOW folded characters.

Every test is prefix-closed: if a suffix is live now, it was live at every earlier feed, so a
match can never start in text that was already released.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Any

from dsl.fold import fold, fold_token, fold_with_origins, folds_to_nothing, is_word_char
from dsl.terms import TermMatcher
from dsl.vocabulary import PII_WINDOW

# Per PII kind: the trailing text a value of that kind could still be growing from.
# Each alternative is closed under prefixes (together with the others of its kind).
_PII_TAILS: dict[str, str] = {
    # local part [\w.+%-], "@", domain [A-Za-z0-9.-]
    "email": rf"[\w.+%@-]{{1,{PII_WINDOW}}}",
    # API keys and JWTs ([A-Za-z0-9_.-]) and a private key's "-----BEGIN ... PRIVATE KEY-----"
    "secret": rf"[A-Za-z0-9_.-]{{1,{PII_WINDOW}}}|-----BEGIN[A-Z0-9 -]{{0,60}}",
    "iban": r"[A-Z]{2}[0-9]{2}[A-Z0-9 ]{0,60}|[A-Z]{1,2}[0-9]?",
    "credit_card": r"[0-9][0-9 -]{0,60}",
    "ssn": r"[0-9][0-9 -]{0,20}",
    "phone": r"[0-9+(][0-9 ()+.-]{0,60}",
    "ip_address": r"[0-9][0-9.]{0,20}|[0-9A-Fa-f:.]{1,45}",
}
# Longest text the tail patterns can match: only this much of `pending` is searched.
_PII_TAIL_SPAN = PII_WINDOW + 2


def pii_tail(kinds: Collection[str]) -> re.Pattern[str] | None:
    """One pattern for the wanted kinds (empty = every kind) matching a live trailing run."""
    wanted = sorted(kinds) if kinds else sorted(_PII_TAILS)
    if not wanted:
        return None
    return re.compile("(?:" + "|".join(_PII_TAILS[kind] for kind in wanted) + r")\Z")


class HoldBack:
    """The hold-back plan of one policy's output tests (see the module docstring)."""

    __slots__ = ("_longest", "_matchers", "_patterns", "_pii_tail", "window")

    def __init__(self, matchers: Iterable[TermMatcher], pii_kinds: Collection[str] | None,
                 window: int, patterns: Iterable[tuple[int, re.Pattern[str]]] = ()) -> None:
        self._matchers = tuple(dict.fromkeys(m for m in matchers if m.max_length))
        self._longest = max((m.max_length for m in self._matchers), default=0)
        # None: no PII test on the output; empty: every kind.
        self._pii_tail = pii_tail(pii_kinds) if pii_kinds is not None else None
        self.window = window  # folded characters held for categories and opaque patterns
        # Analysed patterns: (window, what a match can begin with), see pattern_start().
        self._patterns = tuple(patterns)

    def start(self, before: str, pending: str) -> int:
        """Index in `pending` from which text must still be held; `before` is the released
        character left of it (a word boundary for whole-word terms)."""
        cut = len(pending)
        if self.window:
            cut = fixed_window_start(pending, self.window)
        for width, first in self._patterns:
            low = fixed_window_start(pending, width)
            if low < cut and (found := first.search(pending, low, cut)) is not None:
                cut = found.start()  # the first character in the window a match can begin with
        if self._pii_tail is not None and cut:
            offset = max(0, len(pending) - _PII_TAIL_SPAN)
            found = self._pii_tail.search(pending, offset)
            if found is not None:
                cut = min(cut, found.start())
        if self._matchers and cut:
            cut = min(cut, self._term_start(before, pending))
        return cut

    def _term_start(self, before: str, pending: str) -> int:
        skip = _tail_start(pending, self._longest)
        if skip:  # a long delta: only its end can hold a live key
            return skip + self._tail_term_start(pending[skip - 1], pending[skip:])
        return self._tail_term_start(before, pending)

    def _tail_term_start(self, before: str, pending: str) -> int:
        text = before + pending
        if text.isascii():  # fold's fast path: lower case, whitespace runs as one space
            normalized = " ".join(text.lower().split())
            # The left context was released: no live match starts in it (it would have been
            # held), it is there as the word boundary.
            found = self._earliest(normalized, 1 if before and not before.isspace() else 0)
            if found is None:
                return len(pending)
            return fold_with_origins(text)[1][found] - len(before)
        start = len(pending)
        for normalized, origins in _spellings(text):
            first = next((i for i, origin in enumerate(origins) if origin >= len(before)),
                         len(normalized))
            found = self._earliest(normalized, first)
            if found is not None:
                start = min(start, origins[found] - len(before))
        return start

    def _earliest(self, normalized: str, first: int) -> int | None:
        """The earliest folded index from `first` on where a key of any list is live."""
        size = len(normalized)
        low = max(first, size - self._longest)
        word_starts: list[int] | None = None
        best: int | None = None
        for matcher in self._matchers:
            positions: Iterable[int]
            if not matcher.whole_words:
                positions = range(low, size)
            else:
                if word_starts is None:
                    word_starts = [m.start() for m in _WORD_START.finditer(normalized, low)]
                positions = word_starts
                if matcher.nonword_keys:  # keys that start with punctuation start anywhere
                    positions = sorted({*word_starts, *(m.start() for m in
                                                        _NON_WORD.finditer(normalized, low))})
            found = matcher.live_prefix_start(normalized, positions,
                                              size if best is None else best)
            if found is not None:
                best = found
        return best


def _tail_start(pending: str, longest: int) -> int:
    """An index in `pending` just after whitespace from which the text folds to more than
    `longest` characters (0 when the text is short): a key live at the end starts after it.
    Cut between tokens, since a word folds as a whole (dsl/fold.py)."""
    size = 4 * longest + 16
    while size < len(pending):
        space = _SPACE.search(pending, len(pending) - size)
        if space is None:
            return 0
        if len(fold(pending[space.end():])) > longest:
            return space.end()
        size *= 2
    return 0


def _spellings(text: str) -> list[tuple[str, list[int]]]:
    """The folded text with its origins, and when it ends inside a non-ASCII word, also with
    that word skeleton-mapped: a word wholly in one other script keeps its letters, but the next
    character may make it mixed-script (a Cyrillic "Ѓ", then "icin"), and then its skeleton is
    what is matched."""
    spellings = [fold_with_origins(text)]
    start = len(text)
    while start > 0 and is_word_char(text[start - 1]):
        start -= 1
    if start < len(text) and not text[start:].isascii():
        head, origins = fold_with_origins(text[:start])
        word, offsets = fold_token(text[start:], force_skeleton=True)
        if head and text[start - 1].isspace():
            head += " "
            origins.append(start - 1)
        spellings.append((head + word, origins + [start + offset for offset in offsets]))
    return spellings


_SPACE_RUN = re.compile(r"\s\s")
# Word characters as terms.py counts them (str.isalnum or "_", which is what \w tests).
_WORD_START = re.compile(r"(?<!\w)\w")
_NON_WORD = re.compile(r"\W")
_SPACE = re.compile(r"\s+")


def fixed_window_start(pending: str, window: int) -> int:
    """Index in `pending` from which the last `window` folded characters start (at least)."""
    if window <= 0:
        return len(pending)
    edge = pending[-window - 1:]  # the window and the character before it
    if len(pending) >= window and edge.isascii() and _SPACE_RUN.search(edge) is None:
        # Fast path for plain ASCII: no invisible characters, no marks and no whitespace runs
        # (also none across the window's left edge), so each character is one folded unit.
        return len(pending) - window
    units, index = 0, len(pending)
    while index > 0 and units < window:
        index -= 1
        ch = pending[index]
        if ch.isspace() or folds_to_nothing(ch):
            # Whitespace and invisible characters mixed are one space once folded, or nothing
            # when there is no whitespace among them.
            spaced = ch.isspace()
            while index > 0 and (pending[index - 1].isspace()
                                 or folds_to_nothing(pending[index - 1])):
                index -= 1
                spaced = spaced or pending[index].isspace()
            units += spaced
        else:
            units += 1
    return index


_CATEGORIES = {"CATEGORY_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_SPACE": r"\s",
               "CATEGORY_NOT_SPACE": r"\S", "CATEGORY_WORD": r"\w", "CATEGORY_NOT_WORD": r"\W"}


def pattern_start(pattern: str, flags: str) -> re.Pattern[str] | None:
    """A pattern matching the characters a match of `pattern` can begin with, or None when the
    pattern cannot be analysed (Python's parser reads the RE2 syntax policies use; anything it
    does not know, and a first element that may be empty or is `.`, gives None).

    It over-approximates RE2: without `i` its classes are read with ASCII semantics, as RE2
    reads `\\w`, `\\d` and `\\s`; with `i` it folds case over Unicode as RE2 does (the Kelvin
    sign matches `k`), which widens those classes, and a negated class is not analysed."""
    import re._parser as sre_parse

    try:
        parsed = sre_parse.parse(pattern)
        source = _first_class(list(parsed))
        if source is None:
            return None
        if "i" in flags or parsed.state.flags & re.IGNORECASE:
            if "^" in source.replace("\\^", "") or re.search(r"\\[DSW]", source):
                return None
            return re.compile(source, re.IGNORECASE)
        return re.compile(source, re.ASCII)
    except Exception:  # RE2 syntax Python does not know, or a shape not analysed
        return None


def _first_class(items: list[Any]) -> str | None:
    """Python source of one character class every match of `items` starts with, or None."""
    for op, arg in items:
        name = str(op)
        if name == "AT":
            continue  # an anchor or word boundary takes no character
        if name == "LITERAL":
            return re.escape(chr(arg))
        if name == "NOT_LITERAL":
            return "[^" + re.escape(chr(arg)) + "]"
        if name == "IN":
            return _class_source(arg)
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _, body = arg
            return _first_class(list(body)) if low >= 1 else None
        if name == "SUBPATTERN":
            _, add_flags, del_flags, body = arg
            return None if add_flags or del_flags else _first_class(list(body))
        if name == "BRANCH":
            branches = [_first_class(list(branch)) for branch in arg[1]]
            if any(branch is None for branch in branches):
                return None
            return "(?:" + "|".join(str(branch) for branch in branches) + ")"
        return None
    return None


def _class_source(items: list[Any]) -> str | None:
    parts = []
    for op, arg in items:
        name = str(op)
        if name == "NEGATE":
            parts.append("^")
        elif name == "LITERAL":
            parts.append(re.escape(chr(arg)))
        elif name == "RANGE":
            parts.append(re.escape(chr(arg[0])) + "-" + re.escape(chr(arg[1])))
        elif name == "CATEGORY" and str(arg) in _CATEGORIES:
            parts.append(_CATEGORIES[str(arg)])
        else:
            return None
    return "[" + "".join(parts) + "]"
