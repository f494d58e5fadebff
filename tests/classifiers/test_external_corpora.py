"""The built-in classifiers against data nobody on this project wrote (bench/bench_classifiers.py
computes the full figures for docs/classifiers.md): regression floors, so a change to the
lexicon or the PII detectors that loses what they catch today, or starts flagging benign text
written by others, fails here."""

from __future__ import annotations

import pytest

from bench.bench_classifiers import LOCALES, category_quality, pii_quality


@pytest.fixture(scope="module")
def categories() -> dict:
    return category_quality(per_locale=40, seed=20)


@pytest.fixture(scope="module")
def pii() -> dict:
    return pii_quality(per_locale=40, seed=20)


def test_lexicon_never_flags_text_written_by_others(categories: dict) -> None:
    # Standard library docstrings and Faker sentences in 12 locales: nothing is flagged.
    assert categories["flags_on_benign_sources"] == {}


def test_lexicon_flags_agree_with_the_curated_word_list(categories: dict) -> None:
    against_list = categories["offensive_vs_wordlist"]
    assert against_list["fp"] == 0 and against_list["tp"] >= 10


def test_emails_and_ibans_are_found_in_every_locale(pii: dict) -> None:
    recall = pii["recall_by_kind_and_locale"]
    assert {recall["email"][loc] for loc in LOCALES} == {1.0}
    assert {recall["iban"][loc] for loc in LOCALES} == {1.0}


def test_card_numbers_and_us_ssns_are_mostly_found(pii: dict) -> None:
    recall = pii["recall_by_kind_and_locale"]
    assert min(recall["credit_card"].values()) >= 0.5  # 14-digit Diners numbers are missed
    assert recall["ssn"]["en_US"] == 1.0  # the only locale whose `ssn` is a US SSN


def test_no_pii_is_found_in_addresses_names_and_dates(pii: dict) -> None:
    assert pii["false_positives_by_kind"] == {}
