"""Every ```pol example in docs/policy-language.md passes the checker, so the doc cannot rot."""

import re
from pathlib import Path

import pytest

import dsl

DOC = Path(__file__).resolve().parents[2] / "docs" / "policy-language.md"
EXAMPLES = re.findall(r"```pol\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_reference_has_an_example_per_section():
    assert len(EXAMPLES) >= 9


@pytest.mark.parametrize("source", EXAMPLES, ids=lambda s: s.split('"')[1])
def test_doc_example_checks_clean(source):
    assert [d.render(source) for d in dsl.check(source, "doc.pol")] == []
    dsl.compile_policy(source)


def test_doc_example_compiles_constructs_into_working_rules():
    by_id = {s.split('"')[1]: dsl.compile_policy(s) for s in EXAMPLES}
    facts = dsl.RequestFacts(model="gpt-4o", input_text="mail x@example.com about Project falcon",
                             last_user_text="mail x@example.com about Project falcon")
    decision = by_id["redaction_example"].evaluate_input(facts, dsl.classify(facts.input_text))
    assert decision.decision == "rewrite"
    assert dict(decision.redacted_spans) == {"email": 1, "term": 1}
    assert str(by_id["rollout_example"].rollout.stage_for("mobile-app")) == "canary 10%"
    assert str(by_id["rollout_example"].rollout.stage_for("web")) == "shadow"
