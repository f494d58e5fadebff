import pytest
from corpora import pii_negatives, pii_positives

from dsl.classifiers import PII_KINDS, find_pii, redact_pii

POSITIVES = pii_positives()
NEGATIVES = pii_negatives()


def _label(case):
    return f"{case.kind}:{case.text[:40]!r}"


def test_every_kind_has_positives_and_negatives():
    assert {case.kind for case in POSITIVES} == set(PII_KINDS)
    assert {case.kind for case in NEGATIVES} == set(PII_KINDS)


@pytest.mark.parametrize("case", POSITIVES, ids=_label)
def test_positive_is_found_with_its_exact_span(case):
    expected = []
    cursor = 0
    for value in case.values:
        start = case.text.index(value, cursor)
        expected.append((case.kind, start, start + len(value)))
        cursor = start + len(value)
    found = [(finding.kind, finding.start, finding.end) for finding in find_pii(case.text)]
    assert found == expected


@pytest.mark.parametrize("case", NEGATIVES, ids=_label)
def test_look_alike_is_not_reported_as_its_kind(case):
    found = [case.text[f.start : f.end] for f in find_pii(case.text) if f.kind == case.kind]
    assert found == [], case.why


@pytest.mark.parametrize("case", POSITIVES, ids=_label)
def test_kinds_filter_keeps_only_the_wanted_kind(case):
    other_kinds = [kind for kind in PII_KINDS if kind != case.kind]
    assert find_pii(case.text, other_kinds) == []
    assert [f.kind for f in find_pii(case.text, [case.kind])] == [case.kind] * len(case.values)


def test_redaction_replaces_each_span_with_its_marker():
    text = "Mail jane.doe@example.com, card 4111 1111 1111 1111, call +44 20 7946 0958."
    assert redact_pii(text) == (
        "Mail [REDACTED:EMAIL], card [REDACTED:CREDIT_CARD], call [REDACTED:PHONE].",
        {"email": 1, "credit_card": 1, "phone": 1},
    )


def test_redaction_of_selected_kinds_leaves_the_rest():
    text = "ssn 123-45-6789 from 10.0.0.1 and IBAN DE89 3704 0044 0532 0130 00"
    assert redact_pii(text, ["ssn", "iban"]) == (
        "ssn [REDACTED:SSN] from 10.0.0.1 and IBAN [REDACTED:IBAN]",
        {"ssn": 1, "iban": 1},
    )


def test_redaction_counts_repeated_kinds():
    text = "a@example.com b@example.org 192.168.0.1"
    assert redact_pii(text) == (
        "[REDACTED:EMAIL] [REDACTED:EMAIL] [REDACTED:IP_ADDRESS]",
        {"email": 2, "ip_address": 1},
    )


def test_redaction_of_text_without_pii_changes_nothing():
    assert redact_pii("Nothing to see here, version 3.11.7") == (
        "Nothing to see here, version 3.11.7",
        {},
    )


def test_redaction_exposes_a_shape_the_value_was_shielding_and_redacts_it_too():
    # The "m" of the address hides the phone from its boundary check; the marker's "]" does not.
    text = "a@b.com+44 20 7946 0958"
    assert redact_pii(text) == ("[REDACTED:EMAIL][REDACTED:PHONE]", {"email": 1, "phone": 1})


def test_secret_wins_over_the_digits_inside_it():
    key = "AKIA" + "2" * 4 + "ABCD" + "4111111111111111"[:8]
    text = f"id {key}"
    assert [(f.kind, text[f.start : f.end]) for f in find_pii(text)] == [("secret", key)]


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown PII kind"):
        find_pii("x", ["passport"])
