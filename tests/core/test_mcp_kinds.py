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
    from gateway.mcp.listing import filter_tools
    from gateway.mcp.tools import listed_tool_facts

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


def _shown(source: str, method: str, result: dict[str, object],
           policy_user: str | None = None) -> list[str]:
    from gateway.mcp.listing import LISTINGS, filter_listed

    policy, listing = dsl.compile_policy(source), LISTINGS[method]

    def refused(name: str) -> bool:
        return dsl.policy_always_refuses_tool(policy, listing.facts(
            SERVER, name, target=None, policy_user=policy_user, project_id="p"))

    shown = filter_listed(listing, result, SERVER, refused)
    return [entry.get(listing.name_key) for entry in shown[listing.key]]  # type: ignore[union-attr]


LOCKED = ('policy v1 "t" {\n rule p { when target == "mcp_prompt" then refuse }\n'
          ' rule r { when target == "mcp_resource" and user == "intern" then refuse }\n'
          ' rule t { when tool.name == "card" then refuse }\n'
          ' rule s { when input contains "secret" then refuse } }')
PROMPTS = {"prompts": [{"name": "card"}, {"name": "secret"}, {"bad": 1}], "nextCursor": "c"}
RESOURCES = {"resources": [{"uri": "notes://1"}, {"uri": "secret://k"}]}
TEMPLATES = {"resourceTemplates": [{"uriTemplate": "notes://{id}"}]}


def test_prompt_and_resource_lists_drop_what_the_policy_always_refuses() -> None:
    # Only rules reading the target, user or project hide entries: a text rule (`input`) is
    # decided when the entry is read; a tool rule never fires on a prompt.
    assert _shown(LOCKED, "prompts/list", PROMPTS) == []
    assert _shown(LOCKED, "resources/list", RESOURCES) == ["notes://1", "secret://k"]
    assert _shown(LOCKED, "resources/list", RESOURCES, "intern") == []
    assert _shown(LOCKED, "resources/templates/list", TEMPLATES, "intern") == []
    assert _shown(LOCKED, "resources/templates/list", TEMPLATES, "ada") == ["notes://{id}"]
    # Malformed entries are dropped; the rest of the result stays.
    open_policy = 'policy v1 "t" { rule t { when tool.name == "card" then refuse } }'
    assert _shown(open_policy, "prompts/list", PROMPTS) == ["card", "secret"]


def test_a_refusing_default_hides_prompts_only_when_nothing_could_allow_them() -> None:
    tools_only = ('policy v1 "t" {\n default refuse\n'
                  ' rule ok { when tool.name == "echo" then allow } }')
    assert _shown(tools_only, "prompts/list", PROMPTS) == []
    assert _shown(tools_only, "resources/list", RESOURCES) == []
    by_text = ('policy v1 "t" {\n default refuse\n'
               ' rule ok { when input contains "notes" then allow } }')
    assert _shown(by_text, "resources/list", RESOURCES) == ["notes://1", "secret://k"]
    by_target = ('policy v1 "t" {\n default refuse\n'
                 ' rule ok { when target == "mcp_prompt" then allow } }')
    assert _shown(by_target, "prompts/list", PROMPTS) == ["card", "secret"]
    assert _shown(by_target, "resources/list", RESOURCES) == []
