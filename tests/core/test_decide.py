"""The one decision path (gateway/policy/decide.py): facts from each API's body, including the
tool-call arguments a `tool_arguments` rule reads, decided the same way on every surface."""

import pytest

import dsl
from gateway.adapters import CHAT, MESSAGES, RESPONSES
from gateway.policy.decide import decide_input, request_facts

POLICY = dsl.compile_policy('''policy v1 "tools" {
  default allow
  rule no_wipe { when tool_arguments contains "rm -rf" then refuse reason TOOL_ARGUMENT }
}''')

BODIES = {
    CHAT: {"model": "m", "messages": [
        {"role": "user", "content": "clean up"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "shell", "arguments": '{"cmd": "rm -rf /"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"}]},
    MESSAGES: {"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "clean up"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shell",
                                           "input": {"cmd": "rm -rf /"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": "done"}]}]},
    RESPONSES: {"model": "m", "input": [
        {"role": "user", "content": "clean up"},
        {"type": "function_call", "call_id": "c1", "name": "shell",
         "arguments": '{"cmd": "rm -rf /"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "done"}]},
}


@pytest.mark.parametrize("adapter", list(BODIES), ids=lambda a: a.surface)
def test_tool_call_arguments_are_their_own_text_and_part_of_input(adapter):
    facts = request_facts(adapter, BODIES[adapter])
    assert "rm -rf" in facts.tool_arguments_text
    assert "rm -rf" in facts.input_text
    assert "clean up" not in facts.tool_arguments_text
    decision = decide_input([POLICY], facts, dsl.classify(facts.input_text))
    assert (decision.decision, decision.reason_code) == ("refuse", "TOOL_ARGUMENT")


def test_a_request_without_tool_calls_has_no_tool_arguments():
    facts = request_facts(CHAT, {"model": "m", "messages": [
        {"role": "user", "content": "rm -rf is a command"}]})
    assert facts.tool_arguments_text == ""
    assert decide_input([POLICY], facts, dsl.classify(facts.input_text)).decision == "allow"
