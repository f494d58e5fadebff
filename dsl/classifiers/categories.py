"""The built-in moderation category classifier (docs/classifiers.md).

Method: one Aho-Corasick automaton holds every phrase of the lexicon (direct phrases, rule groups,
framing cues, exempt idioms) over normalised text, so the cost is one linear pass whatever the
lexicon size. Whole-word hits become weighted evidence; a category's score is the noisy-or of its
evidence, damped by negation next to a hit and by protective or fictional framing anywhere in the
text. It is conservative by design: it flags explicit, first-person or how-to phrasings and lets
everything ambiguous pass (see docs/classifiers.md).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import ahocorasick
import re2

from dsl.classifiers import lexicon
from dsl.fold import fold

CATEGORIES: tuple[str, ...] = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
CATEGORY_THRESHOLD: float = 0.5

_PROTECTIVE_DAMPING = 0.5
_FICTION_DAMPING = 0.6
_NEGATION_DAMPING = 0.2
_NEGATION_LOOKBACK_WORDS = 3


class LexiconError(ValueError):
    """The lexicon in lexicon.py is inconsistent; whoever edited it must fix the named entries."""


# Kinds of automaton values.
_PHRASE, _GROUP, _PROTECTIVE, _FICTION, _EXEMPT = range(5)


@dataclass(frozen=True, slots=True)
class _Hit:
    start: int
    end: int


def normalize(text: str) -> str:
    """NFKC, case folding, apostrophes dropped, hyphens/underscores/whitespace runs as one space.

    Dropping apostrophes makes "don't", "dont" and "don\u2019t" one word; hyphens as spaces make
    "self-harm" and "self harm" one phrase.
    """
    if not text.isascii():
        # Folded like policy terms (dsl/fold.py), so invisible characters, accents and
        # look-alike letters do not hide a phrase either.
        text = fold(text.replace("\u2019", "").replace("\u2018", ""))
    text = text.casefold()
    if "'" in text:
        text = text.replace("'", "")
    for separator in ("-", "_", "\n", "\t", "\r", "\f", "\v"):
        if separator in text:
            text = text.replace(separator, " ")
    if not text.isascii():
        text = " ".join(text.split())  # Unicode spaces (NBSP, ideographic) too
    while "  " in text:
        text = text.replace("  ", " ")
    return text


def _category_parent(category: str) -> str | None:
    parent, slash, _ = category.partition("/")
    return parent if slash else None


@functools.cache
def _automaton() -> ahocorasick.Automaton:
    values: dict[str, dict[tuple[int, str], float]] = {}

    def add(phrase: str, kind: int, name: str, weight: float = 0.0) -> None:
        key = normalize(phrase)
        slot = values.setdefault(key, {})
        slot[(kind, name)] = max(weight, slot.get((kind, name), 0.0))

    for category, tiers in lexicon.PHRASES.items():
        for weight, phrases in tiers:
            for phrase in phrases:
                add(phrase, _PHRASE, category, weight)
    for group, phrases in lexicon.GROUPS.items():
        for phrase in phrases:
            add(phrase, _GROUP, group)
    for phrase in lexicon.PROTECTIVE_FRAMING:
        add(phrase, _PROTECTIVE, "")
    for phrase in lexicon.FICTION_FRAMING:
        add(phrase, _FICTION, "")
    for phrase in lexicon.EXEMPT:
        add(phrase, _EXEMPT, "")
    automaton = ahocorasick.Automaton()
    for key, slot in values.items():
        entries = tuple((kind, name, weight) for (kind, name), weight in slot.items())
        automaton.add_word(key, (len(key), entries))
    automaton.make_automaton()
    return automaton


# Groups whose presence every rule needs (one per rule); with the direct phrases they make the
# gate: text containing none of them cannot score, so the costlier automaton pass is skipped.
_GATE_GROUPS = (
    "harm_person", "self_act", "illicit_act", "violent_illicit_act", "dehumanizer",
    "elimination_call", "explicit_sexual", "graphic_request",
)  # fmt: skip


@functools.cache
def _gate() -> re2._Regexp:
    phrases = {
        normalize(phrase)
        for tiers in lexicon.PHRASES.values()
        for _, group in tiers
        for phrase in group
    }
    for group in _GATE_GROUPS:
        phrases.update(normalize(phrase) for phrase in lexicon.GROUPS[group])
    ungated = [
        r for r in lexicon.RULES if r.first not in _GATE_GROUPS and r.second not in _GATE_GROUPS
    ]
    if ungated:
        raise LexiconError(f"rules with neither group in the gate would never fire: {ungated}")
    options = re2.Options()
    options.max_mem = 64 << 20
    return re2.compile("|".join(sorted(map(re2.escape, phrases))), options)


def _is_word_char(ch: str) -> bool:
    return ch.isalnum()


def _whole_word_hits(text: str) -> Iterator[tuple[int, int, tuple[tuple[int, str, float], ...]]]:
    length = len(text)
    for last, (key_length, entries) in _automaton().iter(text):
        start = last - key_length + 1
        end = last + 1
        if start > 0 and _is_word_char(text[start - 1]):
            continue
        if end < length and _is_word_char(text[end]):
            continue
        yield start, end, entries


def _negated(text: str, start: int, gap: tuple[int, int] | None = None) -> bool:
    before = text[max(0, start - 40) : start].split()[-_NEGATION_LOOKBACK_WORDS:]
    words = set(before)
    if gap is not None:
        words.update(text[gap[0] : gap[1]].split())
    return not lexicon.NEGATIONS.isdisjoint(words)


def _rule_weight(text: str, rule: lexicon.Rule, firsts: list[_Hit], seconds: list[_Hit]) -> float:
    best = 0.0
    for first in firsts:
        for second in seconds:
            if 0 <= second.start - first.end <= rule.max_gap:
                head, gap = first, (first.end, second.start)
            elif not rule.ordered and 0 <= first.start - second.end <= rule.max_gap:
                head, gap = second, (second.end, first.start)
            else:
                continue
            weight = rule.weight
            if _negated(text, head.start, gap):
                weight *= _NEGATION_DAMPING
            best = max(best, weight)
    return best


def classify_categories(text: str) -> dict[str, float]:
    """Scores in (0, 1] for the categories with any evidence; absent categories scored 0."""
    normalized = normalize(text)
    if not normalized or _gate().search(normalized.encode()) is None:
        return {}
    hits = list(_whole_word_hits(normalized))
    exempt = [(start, end) for start, end, entries in hits if entries[0][0] == _EXEMPT]
    evidence: dict[str, dict[str, float]] = {}
    groups: dict[str, list[_Hit]] = {}
    protective = fiction = False
    for start, end, entries in hits:
        if exempt and any(s <= start and end <= e for s, e in exempt):
            continue
        for kind, name, weight in entries:
            if kind == _PHRASE:
                if _negated(normalized, start):
                    weight *= _NEGATION_DAMPING
                slot = evidence.setdefault(name, {})
                phrase = normalized[start:end]
                slot[phrase] = max(weight, slot.get(phrase, 0.0))
            elif kind == _GROUP:
                groups.setdefault(name, []).append(_Hit(start, end))
            elif kind == _PROTECTIVE:
                protective = True
            elif kind == _FICTION:
                fiction = True
    for index, rule in enumerate(lexicon.RULES):
        firsts, seconds = groups.get(rule.first), groups.get(rule.second)
        if firsts and seconds:
            weight = _rule_weight(normalized, rule, firsts, seconds)
            if weight > 0:
                evidence.setdefault(rule.category, {})[f"rule {index}"] = weight
    return _scores(evidence, protective=protective, fiction=fiction)


def _scores(
    evidence: dict[str, dict[str, float]], *, protective: bool, fiction: bool
) -> dict[str, float]:
    scores: dict[str, float] = {}
    for category, weights in evidence.items():
        remaining = 1.0
        for weight in weights.values():
            remaining *= 1.0 - weight
        score = 1.0 - remaining
        if protective:
            score *= _PROTECTIVE_DAMPING
        if fiction and category in lexicon.FICTION_DAMPED_CATEGORIES:
            score *= _FICTION_DAMPING
        scores[category] = score
    # A sub-category implies its parent: "self-harm/intent" is self-harm.
    for category, score in list(scores.items()):
        parent = _category_parent(category)
        if parent is not None and score > scores.get(parent, 0.0):
            scores[parent] = score
    return {category: round(score, 4) for category, score in scores.items() if score > 0}
