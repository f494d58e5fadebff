"""A condition is decided at every stage where it can be: output is unknown before the upstream
call, with three-valued logic, and `--explain` reports exactly what the decision did."""

from __future__ import annotations

import json

from helpers import decide, facts, policy
from hypothesis import given, settings
from hypothesis import strategies as st

import dsl
from dsl.__main__ import main

MIXED = policy(
    '  escalation_path "ops@example.com"\n'
    '  list x = ["nightjar"]\n  list y = ["falcon"]\n'
    "  rule either { when input contains any of x or output contains any of x then refuse "
    "reason EITHER }\n"
    "  rule both { when input contains any of y and output contains any of y then escalate "
    "reason BOTH }\n"
    '  rule absent { when input contains "please" and not output contains "sorry" then rewrite '
    'instruction "be kind" }\n')


def test_or_refuses_at_input_when_the_input_settles_it():
    decision = decide(MIXED, "tell me about nightjar")
    assert (decision.decision, decision.reason_code, decision.stage) == (
        "refuse", "EITHER", "input")
    assert decision.fired_rules == ("either",)


def test_or_waits_for_the_output_when_the_input_does_not_settle_it():
    start = decide(MIXED, "hello")
    assert start.decision == "allow"
    after = MIXED.evaluate_output(facts("hello"), "the nightjar sings", start)
    assert (after.decision, after.stage, after.fired_rules) == ("refuse", "output", ("either",))


def test_and_waits_for_the_output():
    start = decide(MIXED, "about falcon")
    assert start.decision == "allow" and start.fired_rules == ()
    fired = MIXED.evaluate_output(facts("about falcon"), "falcon facts", start)
    assert (fired.decision, fired.reason_code) == ("escalate", "BOTH")
    quiet = MIXED.evaluate_output(facts("about falcon"), "birds", start)
    assert quiet.decision == "allow"


def test_not_over_output_is_unknown_at_input():
    start = decide(MIXED, "please help")
    assert start.decision == "allow"
    assert MIXED.evaluate_output(facts("please help"), "ok", start).decision == "rewrite"
    assert MIXED.evaluate_output(facts("please help"), "sorry, ok", start).decision == "allow"


def test_a_missing_field_beside_an_output_test_waits_for_the_output_stage():
    compiled = policy('  rule r { when output contains "zz" and max_output_tokens > 5 then refuse }')
    assert decide(compiled, "hi").decision == "allow"  # not on_error before the output is known
    start = decide(compiled, "hi")
    assert compiled.evaluate_output(facts("hi"), "no", start).error is None
    assert compiled.evaluate_output(facts("hi"), "zz", start).error is not None


def test_a_streamed_or_rule_is_also_caught_in_the_output():
    request = facts("hello")
    monitor = MIXED.output_monitor(request, MIXED.evaluate_input(request, dsl.classify("hello")))
    released, decision = monitor.feed("one nightjar two")
    assert monitor.stopped and decision is not None and decision.reason_code == "EITHER"
    assert "nightjar" not in released


def test_tool_arguments_is_a_text():
    compiled = policy('  list x = ["rm -rf"]\n'
                      "  rule r { when tool_arguments contains any of x then refuse reason TOOL }")
    assert decide(compiled, "hi", tool_arguments_text='{"cmd": "rm -rf /"}').reason_code == "TOOL"
    assert decide(compiled, "rm -rf").decision == "allow"


def test_check_warns_about_a_stopping_rule_only_the_whole_answer_decides():
    source = 'policy v1 "p" {\n  rule r { when not output contains "ok" then refuse }\n}\n'
    messages = [d.message for d in dsl.check(source)]
    assert any("decided only when a streamed answer has ended" in m for m in messages)
    fine = 'policy v1 "p" {\n  rule r { when output contains "ok" then refuse }\n}\n'
    assert dsl.check(fine) == []


def _explain(tmp_path, capsys, text: str, output: str | None) -> str:
    pol = tmp_path / "mixed.pol"
    pol.write_text(MIXED.source)
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"text": text} | ({"output": output} if output else {})))
    assert main(["eval", str(pol), "--request", str(request), "--explain"]) == 0
    return capsys.readouterr().out


def test_explain_shows_the_stage_of_each_rule(tmp_path, capsys):
    out = _explain(tmp_path, capsys, "nightjar and falcon", None)
    assert out.startswith("decision: refuse  reason_code: EITHER  stage: input")
    assert "either: FIRED at input (then refuse)" in out
    assert "both: undecided: needs the output" in out
    assert "absent: no, decided at input (then rewrite)" in out
    out = _explain(tmp_path, capsys, "falcon", "falcon")
    assert "either: no, decided at output (then refuse)" in out
    assert "both: FIRED at output (then escalate)" in out
    out = _explain(tmp_path, capsys, "nightjar falcon", "falcon")
    assert "both: undecided: not run: the request was stopped at input (refuse)" in out


TEXTS = st.lists(st.sampled_from(["nightjar", "falcon", "please", "sorry", "hi"]), max_size=4)


@settings(max_examples=150, deadline=None)
@given(TEXTS.map(" ".join), st.one_of(st.none(), TEXTS.map(" ".join)))
def test_explain_never_reports_a_rule_fired_that_the_decision_does_not_count(text, output):
    request = facts(text)
    decision, traces = MIXED.explain(request, dsl.classify(text), output)
    assert {t.rule_id for t in traces if t.fired} == set(decision.fired_rules)
    assert all((t.stage is None) == (t.note is not None) for t in traces)
    if decision.stage == "input" and decision.decision in ("refuse", "escalate"):
        assert all(t.stage != "output" for t in traces)  # the upstream was never called


def test_explain_as_json_gives_each_rule_its_stage(tmp_path, capsys):
    pol = tmp_path / "mixed.pol"
    pol.write_text(MIXED.source)
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"text": "falcon"}))
    assert main(["eval", str(pol), "--request", str(request), "--explain", "--format",
                 "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    rules = {r["rule"]: r for r in body["rules"]}
    assert (rules["either"]["stage"], rules["either"]["fired"]) == (None, False)
    assert rules["both"]["note"].startswith("needs the output")
    assert (rules["absent"]["stage"], rules["absent"]["note"]) == ("input", None)
    assert body["decision"] == "allow" and body["stage"] == "input"
