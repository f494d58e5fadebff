"""Built-in classifiers of the policy language: moderation categories and PII (docs/classifiers.md).

Pure code: no I/O, no network, no model. The category lexicon is compiled into one automaton on
first use and cached for the life of the process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from dsl.classifiers.categories import CATEGORIES, CATEGORY_THRESHOLD, classify_categories
from dsl.classifiers.pii import (
    PII_KINDS,
    PiiFinding,
    UnknownPiiKindError,
    find_pii,
    redact_pii,
    redaction_marker,
)

__all__ = [
    "CATEGORIES",
    "CATEGORY_THRESHOLD",
    "PII_KINDS",
    "Classification",
    "PiiFinding",
    "UnknownPiiKindError",
    "classify",
    "classify_categories",
    "find_pii",
    "redact_pii",
    "redaction_marker",
]


@dataclass(frozen=True, slots=True)
class Classification:
    """What the classifiers found in one text: category scores (> 0 only) and PII spans."""

    categories: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    pii: tuple[PiiFinding, ...] = ()
    #: scores a golden case pins: they override what the classifier finds in every request text
    pinned: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    #: Classifications of the other texts (`last_user`, `system`, `output`) made beforehand by
    #: the gateway's configured classifier; a text not here is classified when a rule reads it.
    by_text: Mapping[str, Classification] = field(default_factory=lambda: MappingProxyType({}))

    def with_pinned(self, scores: Mapping[str, float]) -> Classification:
        """This classification with `scores` on top, remembered for the other texts."""
        if not scores:
            return self
        return Classification(MappingProxyType({**self.categories, **scores}), self.pii,
                              MappingProxyType(dict(scores)), self.by_text)

    def triggered(self, threshold: float = CATEGORY_THRESHOLD) -> tuple[str, ...]:
        """Categories scored at or above ``threshold``, in the order of ``CATEGORIES``."""
        return tuple(
            category for category in CATEGORIES if self.categories.get(category, 0.0) >= threshold
        )


def classify(text: str, *, categories: bool = True, pii: bool = True) -> Classification:
    """Classify ``text`` once; the policy evaluator tests the result as facts."""
    scores = classify_categories(text) if categories else {}
    findings = tuple(find_pii(text)) if pii else ()
    return Classification(categories=MappingProxyType(scores), pii=findings)
