"""Property tests: the checker never crashes, evaluation is total, order-independent, monotone."""

import random
from pathlib import Path

from helpers import facts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dsl
from dsl.api import load
from dsl.decision import SEVERITY
from dsl.formatter import format_policy

SUPPORT = (Path(__file__).resolve().parents[2] / "policies" / "support_bot.pol").read_text()
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WORDS = st.sampled_from(["idiot", "order", "refund", "coupon", "shut up", "hello", "ass", "class",
                         "ｉｄｉｏｔ", "\n", " ", "promo code", "bob@example.com", "Ünïcödé"])  # noqa: RUF001
TEXT = st.one_of(st.text(max_size=300), st.lists(WORDS, max_size=30).map(" ".join))
RULES = [
    'rule a { when input contains any of bad then refuse reason BAD }',
    'rule b { when input contains "coupon" then rewrite instruction "no codes" }',
    'rule c { when input matches /\\d{3}/ then summary instruction "brief" }',
    'rule d { when pii email then allow redact pii email }',
    'rule e { when message_count > 2 or stream then escalate }',
    'rule f { when input contains any of good and not has_tools then allow redact matched terms }',
]
HEAD = ('  escalation_path "ops@example.com"\n  denylist bad = ["idiot", "shut up"]\n'
        '  list good = ["order", "refund"]\n')


def build(rules: list[str]) -> dsl.CompiledPolicy:
    return dsl.compile_policy('policy v1 "p" {\n' + HEAD + "\n".join(f"  {r}" for r in rules)
                              + "\n}\n")


@FAST
@given(st.text(max_size=400))
def test_random_sources_give_diagnostics_never_a_traceback(source):
    assert all(isinstance(d, dsl.Diagnostic) for d in dsl.check(source))


@FAST
@given(st.data())
def test_mutated_policies_give_diagnostics_never_a_traceback(data):
    position = data.draw(st.integers(0, len(SUPPORT)))
    cut = data.draw(st.integers(0, 40))
    insert = data.draw(st.text(alphabet='{}[]()"/#=,% \nabcruleswhen', max_size=8))
    mutated = SUPPORT[:position] + insert + SUPPORT[position + cut:]
    diagnostics = dsl.check(mutated, "m.pol")
    assert all(1 <= d.line <= mutated.count("\n") + 2 for d in diagnostics)


@FAST
@given(TEXT, st.integers(0, 5), st.booleans())
def test_random_text_never_crashes_and_redaction_is_idempotent(text, count, stream):
    compiled = build(RULES)
    request = facts(text, message_count=count, stream=stream)
    decision = compiled.evaluate_input(request, dsl.classify(text))
    assert decision.decision in SEVERITY
    redactor = decision.obligations.redactor
    if redactor is not None:
        once, _ = redactor.apply(text)
        assert redactor.apply(once) == (once, {})


@FAST
@given(TEXT, st.randoms(use_true_random=False))
def test_shuffling_rules_never_changes_the_decision(text, rng):
    shuffled = RULES[:]
    rng.shuffle(shuffled)
    request = facts(text, message_count=1)
    first = build(RULES).evaluate_input(request, dsl.classify(text))
    second = build(shuffled).evaluate_input(request, dsl.classify(text))
    assert first.summary() == second.summary()
    assert first.obligations.instruction == second.obligations.instruction


@FAST
@given(TEXT, st.sampled_from(['input contains any of bad', 'input contains "a"',
                              'input matches /x/', 'user == "u"', 'pii any', 'stream']),
       st.lists(st.sampled_from(RULES), unique=True))
def test_adding_a_refuse_rule_never_loosens(text, condition, rules):
    request = facts(text)
    before = build(rules).evaluate_input(request, dsl.classify(text))
    after = build([*rules, f"rule extra {{ when {condition} then refuse }}"]).evaluate_input(
        request, dsl.classify(text))
    assert SEVERITY[after.decision] >= SEVERITY[before.decision]


def test_fmt_is_idempotent_and_reparses_to_the_same_policy():
    for path in sorted((Path(__file__).resolve().parents[2] / "policies").glob("*.pol")):
        source = path.read_text()
        tree, _, _ = load(source)
        formatted = format_policy(tree)
        again, diagnostics, _ = load(formatted)
        assert [d for d in diagnostics if d.severity == "error"] == []
        assert format_policy(again) == formatted
        assert _strip(again) == _strip(tree)


def _strip(tree):
    """The AST without positions, so re-parsed and original policies compare by meaning."""
    import dataclasses

    def clean(value):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return (type(value).__name__, *tuple((f.name, clean(getattr(value, f.name))) for f in dataclasses.fields(value) if f.name not in ("pos", "comments")))
        if isinstance(value, tuple):
            return tuple(clean(v) for v in value)
        return value
    items = sorted(clean(tree.items), key=repr)
    return clean(tree.version), clean(tree.policy_id), items


def test_random_rule_subsets_format_and_reparse_identically():
    rng = random.Random(7)
    for _ in range(20):
        rules = rng.sample(RULES, rng.randint(1, len(RULES)))
        source = 'policy v1 "p" {\n' + HEAD + "\n".join(f"  {r}" for r in rules) + "\n}\n"
        tree, _, _ = load(source)
        again, _, _ = load(format_policy(tree))
        assert _strip(again) == _strip(tree)
