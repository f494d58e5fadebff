"""Term matching: folded text (dsl/fold.py), whole words, whitespace-insensitive phrases.

Each term list compiles to ONE Aho-Corasick automaton over the normalised text, so the cost of a
scan depends on the text, not on the number of terms.  Word boundaries are checked only at the
ends of raw automaton hits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import ahocorasick

from dsl.fold import fold, fold_with_origins, folds_to_nothing, term_keys

TERM_PLACEHOLDER = "[REDACTED:TERM]"
_PLACEHOLDER = re.compile(r"\[redacted:[a-z_]+\]")


def normalize(text: str) -> str:
    """The folded text (dsl/fold.py): what every term and literal is compared with."""
    return fold(text)


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class TermMatcher:
    """One automaton for one list.  `terms` are kept as written for reporting."""

    __slots__ = ("_automaton", "_first_chars", "max_length", "nonword_keys", "terms",
                 "whole_words")

    def __init__(self, terms: Sequence[str], whole_words: bool = True) -> None:
        self.terms = tuple(terms)
        self._automaton: ahocorasick.Automaton | None = None
        self.max_length = 0
        self.whole_words = whole_words  # False: a literal, matched anywhere in the text
        self.nonword_keys = False  # some key starts with a non-word character
        first_chars: set[str] = set()
        automaton = ahocorasick.Automaton()
        for written in self.terms:
            for key in term_keys(written):
                if automaton.exists(key):
                    continue  # the first spelling of a term is the one reported
                automaton.add_word(key, (written, len(key), _is_word(key[0]), _is_word(key[-1])))
                self.max_length = max(self.max_length, len(key))
                self.nonword_keys = self.nonword_keys or not _is_word(key[0])
                first_chars.add(key[0])
        self._first_chars = frozenset(first_chars)  # a cheap test before an automaton walk
        if len(automaton):
            automaton.make_automaton()
            self._automaton = automaton

    def spans(self, normalized: str, open_end: bool = False,
              min_start: int = 0) -> list[tuple[int, int, str]]:
        """Whole-word hits as (start, end, term as written) in the normalised text.

        `open_end`: more text may follow, so a hit ending a word at the very end is not yet
        confirmed (the next character could extend the word). `min_start`: hits starting before
        it are left out (the stream monitor's left context, already released).
        """
        if self._automaton is None:
            return []
        found = []
        size = len(normalized)
        for last, (written, length, word_start, word_end) in self._automaton.iter(normalized):
            start, end = last - length + 1, last + 1
            if start < min_start:
                continue
            if word_start and start > 0 and _is_word(normalized[start - 1]):
                continue
            if word_end:
                if end < size:
                    if _is_word(normalized[end]):
                        continue
                elif open_end:
                    continue
            found.append((start, end, written))
        return found

    def live_prefix_start(self, normalized: str, starts: Iterable[int],
                          limit: int) -> int | None:
        """The first of `starts` (ascending, each before `limit`) where a key could still be
        matched: the text from there to the end is a path of the automaton (a key's prefix, or a
        whole key that the next character might still extend into a longer word). None when
        there is none. The caller picks the starts: word starts for whole-word keys (see
        `whole_words` and `nonword_keys`), so the cost is a few automaton walks of at most
        `max_length` characters.
        """
        if self._automaton is None:
            return None
        low = len(normalized) - self.max_length
        match, first_chars = self._automaton.match, self._first_chars
        for start in starts:
            if start >= limit:
                break
            if start >= low and normalized[start] in first_chars and match(normalized[start:]):
                return start
        return None

    def hits(self, normalized: str, open_end: bool = False, min_start: int = 0) -> list[str]:
        """Terms as written, each once, in order of first appearance."""
        seen: dict[str, None] = {}
        for _, _, written in self.spans(normalized, open_end, min_start):
            seen.setdefault(written, None)
        return list(seen)


def _past_invisibles(text: str, end: int) -> int:
    """The end of a hit, moved past the marks and invisible characters that trail its last
    letter: they belong to it, and a redaction must not leave them dangling."""
    while end < len(text) and folds_to_nothing(text[end]) and not text[end].isspace():
        end += 1
    return end


def term_spans(text: str, matchers: Sequence[TermMatcher]) -> list[tuple[int, int]]:
    """Spans of the ORIGINAL text covered by whole-word hits of any matcher, merged, in order.

    Hits inside an existing `[REDACTED:...]` placeholder are ignored so redaction is idempotent.
    """
    normalized, origins = fold_with_origins(text)
    masked = [(m.start(), m.end()) for m in _PLACEHOLDER.finditer(normalized)]
    spans: list[tuple[int, int]] = []
    for matcher in matchers:
        for start, end, _ in matcher.spans(normalized):
            if any(s < end and start < e for s, e in masked):
                continue
            spans.append((origins[start], _past_invisibles(text, origins[end - 1] + 1)))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def redact_terms(text: str, matchers: Sequence[TermMatcher]) -> tuple[str, int]:
    spans = term_spans(text, matchers)
    if not spans:
        return text, 0
    pieces, cursor = [], 0
    for start, end in spans:
        pieces.append(text[cursor:start])
        pieces.append(TERM_PLACEHOLDER)
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces), len(spans)
