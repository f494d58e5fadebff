"""False positives of folding, measured on benign text nobody on this project wrote.

The corpus is Faker's text in several locales and scripts (lorem sentences from each locale's own
word list, names, addresses, company names, job titles), seeded so every run sees the same text.
Two term lists: the attack terms of the bypass tests (the example policies' terms and a sample of
English dictionary words), and the whole English word list Faker ships (971 words, "a", "on",
"the" included), which no real policy would list but which shows where folding can collide.

A text is *flagged* when a term matches it as a whole word. `before` is the matching this project
had before folding (NFKC, case folding, whitespace collapsed); `after` is the folded matching. A
flag only `after` gives is one that folding added; in a script other than Latin every such flag
is a false positive (no English word is written there). Run this file to print the table that
docs/performance.md quotes.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from faker import Faker
from faker.providers.lorem.en_US import Provider as EnglishLorem

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bypass_forms

from dsl.fold import fold
from dsl.terms import TermMatcher, normalize

LOCALES = ("en_US", "de_DE", "fr_FR", "pl_PL", "tr_TR", "vi_VN", "ru_RU", "uk_UA", "bg_BG",
           "el_GR", "hy_AM", "he_IL", "ar_AA", "hi_IN", "th_TH", "ja_JP", "zh_CN", "ko_KR")
TEXTS_PER_LOCALE = 150


@dataclass(frozen=True)
class Rate:
    locale: str
    texts: int
    before: int
    after: int
    added: tuple[tuple[str, str], ...]  # (term, text) flagged only after folding
    naive: int  # flagged if every word were skeleton-mapped, whatever its script


def corpus(locale: str, count: int = TEXTS_PER_LOCALE) -> list[str]:
    fake = Faker(locale)
    fake.seed_instance(13)
    found = []
    for index in range(count):
        kind = index % 4
        if kind == 0:
            found.append(fake.text(max_nb_chars=300))
        elif kind == 1:
            found.append(f"{fake.name()}, {fake.address()}")
        elif kind == 2:
            found.append(f"{fake.company()} {fake.job()}")
        else:
            found.append(" ".join(fake.words(nb=12)))
    return found


def _old_normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _old_matcher(terms: list[str]) -> re.Pattern[str]:
    keys = sorted({_old_normalize(t) for t in terms}, key=len, reverse=True)
    return re.compile(r"(?<![\w])(" + "|".join(map(re.escape, keys)) + r")(?![\w])")


LATIN = frozenset({"en_US", "de_DE", "fr_FR", "pl_PL", "tr_TR", "vi_VN"})


def attack_terms() -> list[str]:
    return bypass_forms.policy_terms() + bypass_forms.dictionary_words()


def every_dictionary_word() -> list[str]:
    return bypass_forms.policy_terms() + sorted(
        {w for w in EnglishLorem.word_list if w.isalpha()})


def measure(terms: list[str], locales: tuple[str, ...] = LOCALES) -> list[Rate]:
    old = _old_matcher(terms)
    new = TermMatcher(terms)
    rates = []
    for locale in locales:
        texts = corpus(locale)
        before = after = naive = 0
        added: list[tuple[str, str]] = []
        for text in texts:
            old_hit = old.search(_old_normalize(text)) is not None
            hits = new.hits(normalize(text))
            before += old_hit
            naive += bool(new.hits(fold(text, force_skeleton=True)))
            after += bool(hits)
            if hits and not old_hit:
                added.append((hits[0], text))
        rates.append(Rate(locale, len(texts), before, after, tuple(added), naive))
    return rates


def report(title: str, rates: list[Rate]) -> None:
    print(f"{title}\n")
    print("| locale | texts | flagged before | flagged after | added by folding | "
          "skeleton on every word |")
    print("|---|---|---|---|---|---|")
    for rate in rates:
        print(f"| {rate.locale} | {rate.texts} | {rate.before} | {rate.after} | {len(rate.added)} "
              f"| {rate.naive} |")
    for group, name in ((LATIN, "Latin script"), (frozenset(LOCALES) - LATIN, "other scripts")):
        part = [r for r in rates if r.locale in group]
        print(f"| {name} | {sum(r.texts for r in part)} | {sum(r.before for r in part)} | "
              f"{sum(r.after for r in part)} | {sum(len(r.added) for r in part)} | "
              f"{sum(r.naive for r in part)} |")
    for rate in rates:
        for term, text in rate.added[:2]:
            print(f"  {rate.locale}: {term!r} in {text[:70]!r}")
    print()


def main() -> int:
    report("Attack terms (policies + 60 dictionary words)", measure(attack_terms()))
    report("Every dictionary word (971)", measure(every_dictionary_word()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
