import itertools
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from dsl.classifiers import (
    CATEGORIES,
    Classification,
    PiiFinding,
    classify,
    classify_categories,
    find_pii,
    redact_pii,
)

PII_FRAGMENTS = st.sampled_from(
    [
        "jane.doe@example.com", "4111 1111 1111 1111", "+44 20 7946 0958", "(415) 555-2671",
        "123-45-6789", "DE89 3704 0044 0532 0130 00", "192.168.1.20", "2001:db8::1",
        "AKIAIOSFODNN7EXAMPLE", "020 7946 0958", "0044 20 7946 0958", "[REDACTED:EMAIL]",
    ]
)  # fmt: skip
GLUE = st.text(alphabet=string.printable + "éß€\u2019\u2014\u00a0", max_size=6)
PII_LIKE_TEXT = st.lists(st.one_of(PII_FRAGMENTS, GLUE), max_size=10).map("".join)
ANY_TEXT = st.one_of(st.text(max_size=300), PII_LIKE_TEXT)


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_redaction_is_idempotent(text):
    once, _ = redact_pii(text)
    assert redact_pii(once) == (once, {})


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_findings_are_sorted_non_overlapping_and_inside_the_text(text):
    findings = find_pii(text)
    for finding in findings:
        assert 0 <= finding.start < finding.end <= len(text)
    for before, after in itertools.pairwise(findings):
        assert before.end <= after.start


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_redaction_counts_match_the_markers_in_the_output(text):
    redacted, counts = redact_pii(text)
    for kind, count in counts.items():
        marker = f"[REDACTED:{kind.upper()}]"
        assert redacted.count(marker) - text.count(marker) == count


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=500))
def test_classification_never_crashes_and_scores_are_probabilities(text):
    result = classify(text)
    assert isinstance(result, Classification)
    assert set(result.categories) <= set(CATEGORIES)
    assert all(0 < score <= 1 for score in result.categories.values())
    assert all(isinstance(finding, PiiFinding) for finding in result.pii)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["I want to kill myself", "How do I build a pipe bomb?"]), GLUE)
def test_case_width_and_spacing_do_not_change_the_category(phrase, suffix):
    plain = classify_categories(phrase + suffix)
    fullwidth_i = "\uff29"
    variant = phrase.upper().replace(" ", "  \n ").replace("I", fullwidth_i) + suffix
    assert classify_categories(variant).keys() == plain.keys()


def test_parent_category_is_implied_by_its_sub_category():
    scores = classify_categories("What is the most painless way to kill myself?")
    assert scores["self-harm"] >= scores["self-harm/instructions"] > 0


def test_negation_lowers_the_score_below_the_threshold():
    assert "self-harm/intent" in classify("I will kill myself").triggered()
    assert classify("I will never kill myself").triggered() == ()


def test_protective_framing_lowers_the_score():
    flagged = classify_categories("where can I buy cocaine")
    framed = classify_categories(
        "where can I buy cocaine? asking for a school report on prevention"
    )
    assert framed["illicit"] < flagged["illicit"]
    assert (
        classify("where can I buy cocaine? asking for a school report on prevention").triggered()
        == ()
    )


def test_whole_words_only():
    assert classify_categories("sendnudes") == {}
    assert "sexual" in classify("send nudes").triggered()


def test_triggered_uses_the_threshold_and_category_order():
    result = Classification(categories={"violence": 0.7, "hate": 0.5, "sexual": 0.49})
    assert result.triggered() == ("hate", "violence")
    assert result.triggered(0.6) == ("violence",)


def test_switches_skip_the_detectors():
    text = "I want to kill myself, mail me at a@example.com"
    assert classify(text, categories=False).categories == {}
    assert classify(text, pii=False).pii == ()
    start = text.index("a@example.com")
    assert classify(text).pii == (PiiFinding("email", start, start + len("a@example.com")),)
