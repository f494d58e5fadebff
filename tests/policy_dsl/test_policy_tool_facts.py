"""Tool facts in the policy language: `tool.name`, `tool.server`, `tools` lists with globs, the
`tool_result` text, `tool_facts` and the tools/list predicate."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import policy

import dsl
from dsl.golden import facts_from_json, run_cases
from dsl.tools import tool_key

TOOL_RULES = '''
  default allow
  on_error refuse
  tools destructive = ["delete_*", "drop_*", "shell"]
  rule no_destructive_tools {
    when tool.name in destructive
    then refuse reason DESTRUCTIVE_TOOL
  }
  rule files_server_read_only {
    when tool.server == "files" and tool.name matches "write_*"
    then refuse reason READ_ONLY
  }
  rule not_on_billing {
    when tool.server in ["billing"] and not (tool.name == "get_invoice")
    then refuse reason BILLING
  }
'''


def call(name: str, server: str | None = "files", arguments: str = "{}",
         **base: object) -> dsl.RequestFacts:
    return dsl.tool_facts(dsl.RequestFacts(surface="mcp", **base),  # type: ignore[arg-type]
                          name, server, arguments)


def decide_input(compiled: dsl.CompiledPolicy, facts: dsl.RequestFacts) -> dsl.Decision:
    return compiled.evaluate_input(facts, dsl.classify(facts.input_text))


def test_tool_facts_fills_the_call_and_keeps_the_mcp_input_convention():
    base = dsl.RequestFacts(surface="chat.completions", project_id="p", input_text="hello")
    facts = dsl.tool_facts(base, "run_shell", "ops", '{"command":"ls"}')
    assert (facts.tool_name, facts.tool_server) == ("run_shell", "ops")
    assert facts.tool_arguments_text == '{"command":"ls"}'
    assert facts.input_text == 'run_shell\n{"command":"ls"}'
    assert facts.project_id == "p" and facts.tool_result_text == ""
    assert base.tool_name is None  # the base is left as it was


@pytest.mark.parametrize(("name", "server", "decision", "rule"), [
    ("delete_records", "files", "refuse", "no_destructive_tools"),
    ("drop_table", None, "refuse", "no_destructive_tools"),
    ("shell", "ops", "refuse", "no_destructive_tools"),
    ("shell_history", "ops", "allow", None),  # a glob-less term matches the whole name only
    ("undelete_records", "files", "allow", None),
    ("write_file", "files", "refuse", "files_server_read_only"),
    ("write_file", "other", "allow", None),
    ("refund", "billing", "refuse", "not_on_billing"),
    ("get_invoice", "billing", "allow", None),
    ("read_file", "files", "allow", None),
])
def test_tool_rules_decide_by_name_and_server(name, server, decision, rule):
    compiled = policy(TOOL_RULES)
    found = decide_input(compiled, call(name, server))
    assert found.decision == decision
    assert found.fired_rules == ((rule,) if rule else ())


@pytest.mark.parametrize("name", [
    "Delete_Records",  # case
    "\uff44\uff45\uff4c\uff45\uff54\uff45_records",  # full-width letters
    "d\u0435lete_records",  # a Cyrillic e
    "de\u200blete_records",  # a zero-width space
    "dé\u0301lete_records",  # an accent
])
def test_look_alike_tool_names_are_the_same_name(name):
    found = decide_input(policy(TOOL_RULES), call(name))
    assert found.decision == "refuse" and found.reason_code == "DESTRUCTIVE_TOOL"


def test_glob_characters_in_a_tool_name_are_not_syntax():
    compiled = policy('tools risky = ["run"]\nrule r { when tool.name in risky then refuse }\n'
                      'rule q { when tool.name == "a*" then refuse reason STAR }')
    for name in ("r*", "[r]un", "ru?", "*"):
        assert decide_input(compiled, call(name)).decision == "allow", name
    assert decide_input(compiled, call("a*")).reason_code == "STAR"
    assert decide_input(compiled, call("abc")).decision == "allow"


def test_a_very_long_tool_name_is_decided():
    compiled = policy(TOOL_RULES)
    assert decide_input(compiled, call("delete_" + "x" * 100_000)).decision == "refuse"
    assert decide_input(compiled, call("x" * 100_000 + "shell")).decision == "allow"


@pytest.mark.parametrize("condition", [
    'tool.name in destructive', 'tool.name == "shell"', 'tool.name != "shell"',
    'tool.name in ["shell"]', 'tool.name matches "*"', 'tool.server != "x"',
    'tool.server == "files"',
])
def test_tool_conditions_are_false_without_a_tool_call(condition):
    compiled = policy(f'on_error refuse\ntools destructive = ["shell"]\n'
                      f'rule r {{ when {condition} then refuse }}')
    plain = dsl.RequestFacts(input_text="delete everything with shell")
    found = decide_input(compiled, plain)
    assert (found.decision, found.error, found.fired_rules) == ("allow", None, ())


def test_tool_server_conditions_are_false_for_a_call_without_a_server():
    compiled = policy('rule r { when tool.server != "files" then refuse }')
    assert decide_input(compiled, call("shell", None)).decision == "allow"
    assert decide_input(compiled, call("shell", "ops")).decision == "refuse"


def test_arguments_are_input_and_tool_arguments():
    compiled = policy('denylist bad = ["rm -rf"]\n'
                      'rule a { when tool_arguments contains any of bad then refuse reason A }\n'
                      'rule p { when pii email in tool_arguments then allow redact pii email }')
    found = decide_input(compiled, call("run", arguments='{"cmd":"RM  -Rf /"}'))
    assert (found.decision, found.reason_code, found.denylist_hits) == ("refuse", "A", ("rm -rf",))
    redacted = decide_input(compiled, call("mail", arguments='{"to":"jane@example.com"}'))
    assert redacted.decision == "allow" and dict(redacted.redacted_spans) == {"email": 1}


def test_tool_result_is_an_output_text():
    compiled = policy('denylist secret = ["internal only"]\n'
                      'rule r { when tool_result contains any of secret then refuse reason R }\n'
                      'rule p { when pii email in tool_result then allow redact pii email }')
    facts = call("lookup")
    before = decide_input(compiled, facts)
    assert before.decision == "allow" and before.error is None  # undecided until the result
    result = "INTERNAL  Only: mail jane@example.com"
    answered = dataclasses.replace(facts, tool_result_text=result)
    after = compiled.evaluate_output(answered, result, before)
    assert (after.decision, after.stage, after.reason_code) == ("refuse", "output", "R")
    clean = "mail jane@example.com"
    redacted = compiled.evaluate_output(dataclasses.replace(facts, tool_result_text=clean),
                                        clean, before)
    assert redacted.decision == "allow" and dict(redacted.redacted_spans) == {"email": 1}
    assert redacted.obligations.redactor is not None
    assert redacted.obligations.redactor.apply(clean)[0] != clean


def test_tool_result_is_empty_on_a_model_answer():
    compiled = policy('rule r { when tool_result contains "x" then refuse }')
    decision = decide_input(compiled, dsl.RequestFacts(input_text="x"))
    assert compiled.evaluate_output(dsl.RequestFacts(), "x x x", decision).decision == "allow"


def test_policy_always_refuses_tool_reads_only_static_rules():
    compiled = policy(TOOL_RULES + '''
  denylist words = ["rm -rf"]
  rule by_arguments {
    when tool.name == "run" and tool_arguments contains any of words
    then refuse
  }
  rule by_project {
    when project == "locked" and tool.name == "read_file"
    then refuse
  }
  rule escalated {
    when tool.name == "pay"
    then escalate
  }
  escalation_path "ops@example.com"
''')
    refuses = dsl.policy_always_refuses_tool
    assert refuses(compiled, call("delete_x", "files", arguments=""))
    assert refuses(compiled, call("write_doc", "files", arguments=""))
    assert not refuses(compiled, call("write_doc", "other", arguments=""))
    assert not refuses(compiled, call("run", "files", arguments=""))  # depends on its arguments
    assert not refuses(compiled, call("pay", "files", arguments=""))  # escalated, not refused
    assert not refuses(compiled, call("read_file", "files", arguments="", project_id="open"))
    assert refuses(compiled, call("read_file", "files", arguments="", project_id="locked"))
    assert [r.rule_id for r in compiled.tool_gate.refusals] == [
        "no_destructive_tools", "files_server_read_only", "not_on_billing", "by_project"]


def test_a_static_rule_needing_a_missing_field_proves_nothing():
    compiled = policy('rule r { when user == "bob" and tool.name == "x" then refuse }')
    assert not dsl.policy_always_refuses_tool(compiled, call("x"))  # user unknown: no proof
    assert dsl.policy_always_refuses_tool(compiled, call("x", policy_user="bob"))
    assert not dsl.policy_always_refuses_tool(compiled, call("x", policy_user="ann"))


def test_tool_key_folds_identifiers():
    assert tool_key("\uff24\uff25\uff2c\uff25\uff34\uff25") == tool_key("delete") == tool_key("d\u0435lete")


def test_formatter_round_trips_tool_rules():
    from dsl.diagnostics import DiagnosticSink
    from dsl.formatter import format_policy
    from dsl.parser import parse_source

    source = f'policy v1 "t" {{\n{TOOL_RULES}\n}}\n'
    parsed = parse_source(source, DiagnosticSink("t.pol"))
    assert parsed is not None
    formatted = format_policy(parsed)
    assert "tools destructive = [" in formatted and "tool.name in destructive" in formatted
    again = parse_source(formatted, DiagnosticSink("t.pol"))
    assert again is not None and format_policy(again) == formatted


def test_golden_cases_give_the_tool_call():
    compiled = policy(TOOL_RULES + '\n  rule r { when pii email in tool_result '
                      'then allow redact pii email }')
    cases = [
        {"name": "by name", "surface": "mcp", "tool_name": "Delete_All", "tool_server": "files",
         "tool_arguments": {"where": "x"},
         "expect": {"decision": "refuse", "fired_rules": ["no_destructive_tools"]}},
        {"name": "result", "surface": "mcp", "tool_name": "lookup",
         "tool_result": "write to a@example.com",
         "expect": {"decision": "allow", "decided_at": "output", "redactions": {"email": 1},
                    "redacted_text": "write to [REDACTED:EMAIL]"}},
        {"name": "no call", "text": "delete_all",
         "expect": {"decision": "allow", "fired_rules": []}},
    ]
    results = run_cases(compiled, cases)
    assert [(r.name, r.problems) for r in results] == [
        ("by name", ()), ("result", ()), ("no call", ())]
    bad = run_cases(compiled, [{"name": "x", "tool_server": "s", "tool_arguments": 3,
                                "expect": {"decision": "allow"}}])
    assert len(bad[0].problems) == 2


def test_golden_tool_call_reads_as_the_gateway_input():
    facts = facts_from_json({"tool_name": "run", "tool_arguments": {"cmd": "ls", "é": 1}})
    assert facts.input_text == 'run\n{"cmd":"ls","é":1}'
    assert facts.tool_arguments_text == '{"cmd":"ls","é":1}'


def test_the_checker_compares_tool_names_folded():
    same = dsl.check('policy v1 "t" { rule r { when tool.name == "Shell" and '
                     'tool.name == "shell" then refuse } }')
    assert [d.code for d in same] == []
    never = dsl.check('policy v1 "t" { rule r { when tool.name == "a" and '
                      'tool.name == "b" then refuse } }')
    assert [d.code for d in never] == ["never-fires"]


PERMITTED_ONLY = '''
  default refuse
  tools permitted = ["read_*", "search"]
  rule permitted_tools {
    when tool.name in permitted
    then allow
  }
  rule redact_results {
    when pii email in tool_result
    then allow
    redact pii email
  }
'''


def test_a_default_refusal_hides_every_tool_nothing_allows():
    compiled = policy(PERMITTED_ONLY)
    refuses = dsl.policy_always_refuses_tool
    assert not refuses(compiled, call("read_file", arguments=""))
    assert not refuses(compiled, call("Search", arguments=""))
    assert refuses(compiled, call("write_file", arguments=""))
    # What the predicate says is what deciding the call says.
    for name in ("read_file", "write_file"):
        decided = decide_input(compiled, call(name, arguments='{"a":"b"}')).decision
        assert (decided == "refuse") == refuses(compiled, call(name, arguments=""))


@pytest.mark.parametrize("rule", [
    'rule by_text { when input contains "please" then allow }',
    'rule by_count { when message_count > 0 and tool.name == "x" then allow }',
    'rule escalated { when tool_arguments contains "pay" then escalate }',
])
def test_a_default_refusal_hides_nothing_a_text_could_allow(rule):
    compiled = policy(PERMITTED_ONLY + rule + '\n  escalation_path "ops@example.com"')
    assert compiled.tool_gate.rescues is None
    assert not dsl.policy_always_refuses_tool(compiled, call("write_file", arguments=""))


def test_a_default_allow_filters_only_with_static_refusals():
    assert not policy('rule r { when input contains "x" then refuse }').tool_gate.filters
    assert policy('rule r { when tool.name == "x" then refuse }').tool_gate.filters
