"""Quality of the built-in classifiers against data nobody on this project wrote.

Categories: the built-in lexicon is compared with `alt-profanity-check` (a linear model trained
on human-labelled comments) as a reference rater, over texts we did not write: docstrings of the
Python standard library, Faker's sentences in 10 locales, and better-profanity's curated word
list set into Faker sentences. The rater only knows "offensive or not", so it can grade the
categories that are about offensive language (harassment, hate, sexual); for the others only the
rater's agreement with what the lexicon flagged (a precision) is measured.

PII: each detector against values Faker generates in 12 locales (emails, phone numbers, IBANs,
credit card numbers, national id numbers Faker calls `ssn`), each set in a sentence; false
positives are counted over Faker's addresses, names, company names and sentences.

`python -m bench classifiers [--per-locale N] [--json]`.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faker import Faker

from dsl.classifiers import CATEGORIES, CATEGORY_THRESHOLD, classify_categories, find_pii

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "pt_BR",
           "sv_SE", "ja_JP", "hi_IN")
STDLIB = ("os", "re", "json", "collections", "asyncio", "email", "http.client", "argparse",
          "logging", "pathlib", "subprocess", "unittest", "datetime", "decimal",
          "functools", "itertools", "shutil", "sqlite3", "ssl", "socket", "threading", "zipfile",
          "tarfile", "csv", "urllib.request", "xml.etree.ElementTree", "statistics", "random",
          "textwrap", "difflib", "inspect", "dataclasses", "enum", "contextlib", "tempfile")
OFFENSIVE_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening",
                        "sexual")


def stdlib_sentences(limit: int) -> list[str]:
    found: list[str] = []
    for name in STDLIB:
        module = importlib.import_module(name)
        for _, member in inspect.getmembers(module):
            doc = inspect.getdoc(member) if callable(member) else None
            for paragraph in (doc or "").split("\n\n"):
                text = " ".join(paragraph.split())
                if 40 <= len(text) <= 400:
                    found.append(text)
    return list(dict.fromkeys(found))[:limit]


def profanity_words() -> list[str]:
    import better_profanity

    path = Path(better_profanity.__file__).parent / "profanity_wordlist.txt"
    return [w.strip() for w in path.read_text().splitlines() if w.strip()]


def corpus(per_locale: int, seed: int) -> list[tuple[str, str, bool]]:
    """(source, text, word-list label) triples."""
    random.seed(seed)
    texts = [("stdlib docstrings", t, False) for t in stdlib_sentences(3000)]
    for locale in LOCALES:
        fake = Faker(locale)
        fake.seed_instance(seed)
        texts += [(f"faker {locale}", fake.sentence(nb_words=14), False)
                  for _ in range(per_locale)]
    english = Faker("en_US")
    english.seed_instance(seed)
    texts += [("better-profanity words", f"{english.sentence(nb_words=8)} {word}", True)
              for word in profanity_words()]
    return texts


def rate(texts: list[str]) -> list[float]:
    from profanity_check import predict_prob

    return [float(p) for p in predict_prob(texts)]


def prf(tp: int, fp: int, fn: int) -> dict[str, Any]:
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    return {"tp": tp, "fp": fp, "fn": fn,
            "precision": None if precision is None else round(precision, 3),
            "recall": None if recall is None else round(recall, 3)}


def category_quality(per_locale: int, seed: int) -> dict[str, Any]:
    rows = corpus(per_locale, seed)
    ratings = rate([text for _, text, _ in rows])
    flagged = [{c for c, s in classify_categories(text).items() if s >= CATEGORY_THRESHOLD}
               for _, text, _ in rows]
    rater = [p >= 0.5 for p in ratings]
    report: dict[str, Any] = {"texts": len(rows),
                              "by_source": dict(Counter(source for source, _, _ in rows)),
                              "rater_positive": sum(rater)}
    offensive = [bool(f & set(OFFENSIVE_CATEGORIES)) for f in flagged]
    report["offensive_vs_rater"] = prf(
        *_counts([o for o in offensive], rater))
    report["offensive_vs_wordlist"] = prf(
        *_counts(offensive, [label for _, _, label in rows]))
    report["rater_vs_wordlist"] = prf(*_counts(rater, [label for _, _, label in rows]))
    per_category = {}
    for category in CATEGORIES:
        mine = [category in f for f in flagged]
        tp, _, fn = _counts(mine, rater)
        entry = {"flagged": sum(mine), "rater_agrees": tp,
                 "precision_vs_rater": round(tp / sum(mine), 3) if sum(mine) else None}
        if category in OFFENSIVE_CATEGORIES:
            entry["recall_vs_rater"] = round(tp / (tp + fn), 3) if tp + fn else None
        per_category[category] = entry
    report["per_category"] = per_category
    benign_flags = Counter(source for (source, _, label), f in zip(rows, flagged, strict=True)
                           if f and not label)
    report["flags_on_benign_sources"] = dict(benign_flags)
    return report


def _counts(predicted: list[bool], truth: list[bool]) -> tuple[int, int, int]:
    pairs = list(zip(predicted, truth, strict=True))
    return (sum(p and t for p, t in pairs), sum(p and not t for p, t in pairs),
            sum(t and not p for p, t in pairs))


PII_GENERATORS = {
    "email": lambda f: f.email(),
    "phone": lambda f: f.phone_number(),
    "iban": lambda f: f.iban(),
    "credit_card": lambda f: f.credit_card_number(),
    "ssn": lambda f: f.ssn(),
}


def pii_quality(per_locale: int, seed: int) -> dict[str, Any]:
    recall: dict[str, dict[str, Any]] = {kind: {} for kind in PII_GENERATORS}
    false_positives: Counter[str] = Counter()
    benign_texts = 0
    for locale in LOCALES:
        fake = Faker(locale)
        fake.seed_instance(seed)
        for kind, generate in PII_GENERATORS.items():
            found = 0
            for _ in range(per_locale):
                value = generate(fake)
                text = f"{fake.sentence(nb_words=6)} {value} {fake.sentence(nb_words=4)}"
                if any(f.kind == kind for f in find_pii(text)):
                    found += 1
            recall[kind][locale] = round(found / per_locale, 3)
        for _ in range(per_locale):
            for text in (fake.address(), fake.name(), fake.company(), fake.sentence(),
                         fake.date(), fake.postcode()):
                benign_texts += 1
                false_positives.update(f.kind for f in find_pii(text))
    return {"recall_by_kind_and_locale": recall, "benign_texts": benign_texts,
            "false_positives_by_kind": dict(false_positives)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-locale", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = {"categories": category_quality(args.per_locale, args.seed),
              "pii": pii_quality(args.per_locale, args.seed)}
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
