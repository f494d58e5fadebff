"""The governed MCP request kinds (gateway/mcp/kinds.py): tools/call, prompts/get and
resources/read read as policy facts, their answers' texts, redactions and holding answers."""

from __future__ import annotations

import pytest

import dsl
from gateway.errors import McpInvalidParams
from gateway.mcp.kinds import KINDS, PROMPT_TARGET, RESOURCE_TARGET
from gateway.mcp.settings import McpServer

SERVER = McpServer(name="files", url="http://127.0.0.1:1/mcp")
EMAIL = dsl.Redactor(frozenset({"email"}))


def _facts(method: str, name: str, arguments: dict[str, object]) -> dsl.RequestFacts:
    return KINDS[method].facts(SERVER, name, arguments, target=None, policy_user="u",
                               project_id="p")


def test_a_tool_call_fills_the_tool_facts() -> None:
    facts = _facts("tools/call", "run_shell", {"command": "ls"})
    assert (facts.tool_name, facts.tool_server, facts.target) == ("run_shell", "files",
                                                                   "mcp_tool")
    assert facts.tool_arguments_text == '{"command":"ls"}'
    assert facts.input_text == facts.last_user_text == 'run_shell\n{"command":"ls"}'
    assert facts.surface == "mcp" and facts.model == "mcp:files"


@pytest.mark.parametrize(("method", "name", "arguments", "target", "text"), [
    ("prompts/get", "card", {"name": "Jane"}, PROMPT_TARGET, 'card\n{"name":"Jane"}'),
    ("prompts/get", "plain", {}, PROMPT_TARGET, "plain"),
    ("resources/read", "notes://7", {}, RESOURCE_TARGET, "notes://7"),
])
def test_prompts_and_resources_are_no_tool_calls(method: str, name: str,
                                                 arguments: dict[str, object], target: str,
                                                 text: str) -> None:
    facts = _facts(method, name, arguments)
    assert facts.tool_name is None and facts.tool_server is None
    assert facts.tool_arguments_text == "" and facts.target == target
    assert facts.input_text == text
    policy = dsl.compile_policy('policy v1 "t" { rule r { when tool.name matches "*" '
                                'then refuse } }')
    assert policy.evaluate_input(facts, dsl.classify(text)).decision == "allow"


@pytest.mark.parametrize(("method", "params"), [
    ("prompts/get", {}), ("prompts/get", {"name": ""}),
    ("prompts/get", {"name": "x", "arguments": ["a"]}),
    ("resources/read", {}), ("resources/read", {"uri": 7}),
])
def test_bad_params_are_invalid_params(method: str, params: dict[str, object]) -> None:
    with pytest.raises(McpInvalidParams):
        KINDS[method].params(params)


def test_prompt_answers_are_read_and_redacted_without_roles() -> None:
    kind = KINDS["prompts/get"]
    result = {"description": "d", "messages": [
        {"role": "user", "content": {"type": "text", "text": "mail jane@example.com"}}]}
    assert kind.result_text(result) == "mail jane@example.com"
    redacted = kind.redact_result(result, EMAIL)
    assert redacted["messages"][0]["content"]["text"] == "mail [REDACTED:EMAIL]"
    assert redacted["messages"][0]["role"] == "user" and redacted["description"] == "d"


def test_resource_answers_skip_blobs() -> None:
    kind = KINDS["resources/read"]
    result = {"contents": [
        {"uri": "notes://1", "mimeType": "text/plain", "text": "jane@example.com"},
        {"uri": "notes://2", "mimeType": "image/png", "blob": "amFuZUBleGFtcGxlLmNvbQ=="}]}
    assert kind.result_text(result) == "notes://1\njane@example.com\nnotes://2"
    redacted = kind.redact_result(result, EMAIL)
    assert redacted["contents"][0]["text"] == "[REDACTED:EMAIL]"
    assert redacted["contents"][1]["blob"] == result["contents"][1]["blob"]


def test_holding_answers_are_valid_results_of_their_kind() -> None:
    prompt = KINDS["prompts/get"].holding_result("held", "card")
    assert prompt["messages"][0]["content"] == {"type": "text", "text": "held"}
    resource = KINDS["resources/read"].holding_result(None, "notes://1")
    assert resource["contents"][0]["uri"] == "notes://1"
    assert KINDS["tools/call"].holding_result("held", "x")["isError"] is True


def test_events_name_what_was_called_never_a_uri() -> None:
    assert KINDS["tools/call"].event("run") == {"tool": {"name": "run"}}
    assert KINDS["prompts/get"].event("card") == {"prompt": {"name": "card"}}
    assert KINDS["resources/read"].event("users://jane@example.com/x") == {
        "resource": {"scheme": "users"}}
    assert KINDS["resources/read"].event("no-scheme") == {"resource": {"scheme": None}}


def test_tool_lists_drop_what_the_policy_always_refuses() -> None:
    from gateway.mcp.tools import filter_tools, listed_tool_facts

    policy = dsl.compile_policy('policy v1 "t" {\n tools gone = ["wipe_*"]\n'
                                ' rule r { when tool.name in gone then refuse }\n'
                                ' rule s { when tool.name == "run" and input contains "x" '
                                'then refuse } }')
    server = McpServer(name="files", url="http://127.0.0.1:1/mcp", denied_tools=("del*",))

    def refused(name: str) -> bool:
        return dsl.policy_always_refuses_tool(policy, listed_tool_facts(
            server, name, target=None, policy_user=None, project_id="p"))

    result = {"tools": [{"name": n} for n in ("wipe_disk", "WIPE_all", "delete", "run", "ls")],
              "nextCursor": "c"}
    shown = filter_tools(result, server, refused)
    assert [t["name"] for t in shown["tools"]] == ["run", "ls"]
    assert shown["nextCursor"] == "c"
