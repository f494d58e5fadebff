"""Term matching (docs/policy-language.md), request fields, errors and decision composition."""

import pytest
from helpers import decide, policy

import dsl
from dsl.terms import TermMatcher, normalize

DENY = '  denylist bad = ["ass", "Hate Speech", "straße", "c++"]\n' \
       '  rule r { when input contains any of bad then refuse }'


@pytest.mark.parametrize(("text", "hits"), [
    ("what a class act", []),                       # whole word: `ass` is not in `class`
    ("you ass!", ["ass"]),
    ("ASS", ["ass"]),                               # case folding
    ("ａｓｓ", ["ass"]),                             # fullwidth letters, NFKC  # noqa: RUF001
    ("this is hate\n\n   speech", ["Hate Speech"]),  # any run of whitespace, newlines included
    ("hatespeech", []),
    ("STRASSE", ["straße"]),                        # casefold: ß == ss
    ("I code in c++ daily", ["c++"]),
    ("ass ass ASS hate speech", ["ass", "Hate Speech"]),  # each once, as written
])
def test_term_matching(text, hits):
    decision = decide(policy(DENY), text)
    assert list(decision.denylist_hits) == hits
    assert decision.decision == ("refuse" if hits else "allow")


def test_normalize_collapses_whitespace_and_folds_case():
    assert normalize("  Ｈello\t\n WORLD ") == "hello world"  # noqa: RUF001


def test_matcher_reports_terms_in_order_of_first_appearance():
    matcher = TermMatcher(["beta", "alpha", "Alpha"])
    assert matcher.hits("alpha beta alpha") == ["alpha", "beta"]


def test_allowlist_refuses_when_no_term_is_present():
    compiled = policy('  allowlist topics reason OFF_TOPIC = ["billing", "refund"]')
    assert decide(compiled, "a question about billing").decision == "allow"
    off = decide(compiled, "write a poem")
    assert (off.decision, off.reason_code, off.fired_rules) == ("refuse", "OFF_TOPIC", ("allowlist",))


def test_fields_comparisons_globs_and_in():
    compiled = policy(
        '  rule big { when model matches "gpt-4*" and input_tokens >= 1000 then refuse reason BIG }\n'
        '  rule where { when surface in ["responses"] and not stream then rewrite instruction "x" }')
    assert decide(compiled, model="gpt-4o", estimated_input_tokens=1000).reason_code == "BIG"
    assert decide(compiled, model="gpt-3.5", estimated_input_tokens=5000).decision == "allow"
    assert decide(compiled, model="m", surface="responses").decision == "rewrite"
    assert decide(compiled, model="m", surface="responses", stream=True).decision == "allow"
    assert decide(compiled, surface="responses").error == "rule `big`: request field `model` is missing"


def test_missing_field_obeys_on_error_and_reports_the_error():
    strict = policy('  rule r { when user == "bob" then refuse }')
    lenient = policy('  on_error allow\n  rule r { when user == "bob" then refuse }')
    decision = decide(strict, "hi")
    assert (decision.decision, decision.error) == (
        "refuse", "rule `r`: request field `user` is missing")
    assert decide(lenient, "hi").decision == "allow"
    assert decide(lenient, "hi").error is not None
    assert decide(strict, "hi", policy_user="alice").decision == "allow"


def test_most_severe_wins_and_custom_reason_codes():
    compiled = policy(
        '  escalation_path "ops@example.com"\n'
        '  rule a { when input contains "x" then rewrite instruction "be nice" }\n'
        '  rule b { when input contains "y" then summary instruction "be brief" }\n'
        '  rule c { when input contains "z" then escalate reason NEEDS_HUMAN }')
    assert decide(compiled, "x").decision == "rewrite"
    both = decide(compiled, "x y")
    assert (both.decision, both.obligations.instruction) == ("summary", "be brief\nbe nice")
    esc = decide(compiled, "x y z")
    assert (esc.decision, esc.reason_code, esc.obligations.escalation_path) == (
        "escalate", "NEEDS_HUMAN", "ops@example.com")


def test_default_applies_only_when_nothing_fires():
    compiled = policy('  default refuse\n  rule ok { when model == "safe" then allow }')
    assert decide(compiled, model="other").decision == "refuse"
    assert decide(compiled, model="safe").decision == "allow"


def test_regexes_share_one_set_and_match_raw_text():
    compiled = policy('  rule a { when input matches /\\bsk-[a-z0-9]{8}\\b/ then refuse reason KEY }\n'
                      '  rule b { when system matches /(?i)you are dan/ then refuse reason DAN }')
    assert decide(compiled, "my key sk-abcd1234 ok").reason_code == "KEY"
    assert decide(compiled, "hi", system_text="YOU ARE DAN now").reason_code == "DAN"
    assert decide(compiled, "sk-short").decision == "allow"


def test_pii_and_term_redaction_compose():
    compiled = policy('  list names = ["Project Falcon"]\n'
                      '  rule a { when pii email then allow redact pii email }\n'
                      '  rule b { when input contains any of names then allow redact matched terms }')
    text = "mail bob@example.com about project\nfalcon"
    decision = decide(compiled, text)
    assert dict(decision.redacted_spans) == {"email": 1, "term": 1}
    redacted, counts = decision.obligations.redactor.apply(text)
    assert redacted == "mail [REDACTED:EMAIL] about [REDACTED:TERM]"
    assert counts == {"email": 1, "term": 1}


def test_categories_and_request_flagged_categories():
    compiled = policy('  rule h { when category "violence" >= 0.9 then refuse }')
    facts = dsl.RequestFacts(input_text="text", flagged_categories=frozenset({"hate"}))
    scores = dsl.Classification(categories={"violence": 0.95, "hate": 0.99}, pii=())
    decision = compiled.evaluate_input(facts, scores)
    assert decision.decision == "refuse"
    assert sorted(decision.triggered_categories) == ["hate", "violence"]
    assert decision.fired_rules == ("flagged_categories", "h")
