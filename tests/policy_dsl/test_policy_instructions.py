"""Rewrite and summary decisions always carry an instruction (default, policy-level or rule)."""

import json

import pytest
from helpers import decide, policy

import dsl
from dsl.__main__ import main
from dsl.instructions import DEFAULT_REWRITE_INSTRUCTION, DEFAULT_SUMMARY_INSTRUCTION

RULE = 'list t = ["topic"]\nrule r {{ when input contains any of t then {decision} }}'


@pytest.mark.parametrize(("decision", "default"), [
    ("rewrite", DEFAULT_REWRITE_INSTRUCTION), ("summary", DEFAULT_SUMMARY_INSTRUCTION)])
def test_without_any_instruction_the_default_text_is_used(decision, default):
    compiled = policy(RULE.format(decision=decision))
    assert dsl.check(f'policy v1 "t" {{\n{RULE.format(decision=decision)}\n}}\n') == []
    assert decide(compiled, "a topic").obligations.instruction == default


def test_default_texts_say_what_each_decision_is_for():
    assert "intent" not in DEFAULT_SUMMARY_INSTRUCTION
    assert "legitimately wants" in DEFAULT_REWRITE_INSTRUCTION
    assert "high level" in DEFAULT_SUMMARY_INSTRUCTION
    assert "actionable detail" in DEFAULT_SUMMARY_INSTRUCTION


def test_policy_level_and_rule_instructions_win_over_the_default():
    compiled = policy('summary_instruction "Stay general."\n' + RULE.format(decision="summary"))
    assert decide(compiled, "topic").obligations.instruction == "Stay general."
    ruled = policy(RULE.format(decision='rewrite instruction "Be kind."'))
    assert decide(ruled, "topic").obligations.instruction == "Be kind."


@pytest.mark.parametrize(("action", "key", "decision"), [
    ("rewrite", "rewrite_instruction", "rewrite"), ("summarize", "summary_instruction", "summary")])
def test_json_document_sets_instructions_under_config_rules(action, key, decision):
    doc = {"name": "j", "config": {"rules": {"denylist": ["topic"], "enforcement_action": action,
                                             key: "Custom text."}}}
    compiled = dsl.compile_policy(doc)
    result = decide(compiled, "a topic")
    assert (result.decision, result.obligations.instruction) == (decision, "Custom text.")


def test_json_document_without_instruction_gets_the_default():
    doc = {"name": "j", "config": {"rules": {"denylist": ["topic"],
                                             "enforcement_action": "summarize"}}}
    assert decide(dsl.compile_policy(doc), "topic").obligations.instruction == (
        DEFAULT_SUMMARY_INSTRUCTION)


def test_json_instruction_must_be_a_string():
    doc = {"name": "j", "config": {"rules": {"rewrite_instruction": 3}}}
    assert [d.message for d in dsl.check(doc)] == [
        "`config.rules.rewrite_instruction` must be a string"]


@pytest.mark.parametrize(("mode", "decision"), [("rewrite", "rewrite"), ("summarize", "summary")])
def test_legacy_replacement_message_is_the_instruction_of_rewrite_and_summary(mode, decision):
    doc = {"name": "l", "rules": {"denylist": ["topic"]},
           "refusal_replacement": {"mode": mode, "message": "Legacy text."}}
    result = decide(dsl.compile_policy(doc), "topic")
    assert (result.decision, result.obligations.instruction) == (decision, "Legacy text.")


def test_eval_shows_the_instruction_that_would_be_added(tmp_path, capsys):
    pol = tmp_path / "p.pol"
    pol.write_text('policy v1 "p" {\n' + RULE.format(decision="summary") + "\n}\n")
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"text": "topic"}))
    assert main(["eval", str(pol), "--request", str(request)]) == 0
    assert f"instruction: {DEFAULT_SUMMARY_INSTRUCTION}" in capsys.readouterr().out
    assert main(["eval", str(pol), "--request", str(request), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["instruction"] == DEFAULT_SUMMARY_INSTRUCTION
