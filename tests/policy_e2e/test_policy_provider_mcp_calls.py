"""Calls a provider runs on a client's remote MCP server (responses `mcp_call` items), end to
end: the real gateway under hypercorn, the mock provider answering with `mcp_call` items
(streamed and whole), and the official openai SDK. `model_tools.pol` refuses `edit_page` on the
server `wiki` (`tool.server`: the configured server whose URL the request's `mcp` tool names),
and nowhere else; `mcp` tool definitions lose it from their `allowed_tools`. Chat definitions in
the flat form are filtered as the nested ones are."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from test_policy_model_tool_rules import PROMPT
from test_policy_streams import events_of, headers, new_user, openai_sdk

ARGUMENTS = '{"page": "Home", "text": "Qzv new text"}'
PIECES = [ARGUMENTS[:9], ARGUMENTS[9:25], ARGUMENTS[25:]]


def declared(label: str) -> list[Any]:
    """The request's `mcp` tool labelled `label`, on the configured server of that name."""
    return [{"type": "mcp", "server_label": label, "server_url": f"https://{label}.example/mcp",
             "require_approval": "never"}]


def on(server: str, user: str) -> dict[str, str]:
    return headers(user, chunks=["On it."], tool_calls=[
        {"name": "edit_page", "arguments": PIECES, "server_label": server}])


def test_a_refused_provider_mcp_call_refuses_the_answer_streamed_and_whole(
        governed: Any, mock: Any) -> None:
    whole_user, stream_user = new_user(), new_user()
    events: list[Any] = []
    with openai_sdk(governed, "proj_model_tools") as client:
        with pytest.raises(openai.PermissionDeniedError) as whole:
            client.responses.create(model="m", input=PROMPT, tools=declared("wiki"),
                                    extra_headers=on("wiki", whole_user))
        with pytest.raises(openai.APIError) as streamed:
            for event in client.responses.create(model="m", input=PROMPT, stream=True,
                                                 tools=declared("wiki"),
                                                 extra_headers=on("wiki", stream_user)):
                events.append(event)
    for error in (whole, streamed):
        assert error.value.code == "policy_refused"
    assert "Qzv" not in repr(events) + repr(whole.value.body)
    for user in (whole_user, stream_user):
        [event] = events_of(governed, user)
        assert (event["outcome"], event["reason_code"]) == ("refused", "WIKI_WRITE")
        assert [(c["name"], c["decision"]) for c in event["tool_calls"]] == [
            ("edit_page", "refuse")]
        assert "Qzv" not in json.dumps(event)


def test_the_same_tool_on_another_server_reaches_the_sdk(governed: Any, mock: Any) -> None:
    with openai_sdk(governed, "proj_model_tools") as client:
        response = client.responses.create(model="m", input=PROMPT,
                                           extra_headers=on("docs", new_user()))
        [item] = [o for o in response.output if o.type == "mcp_call"]
        assert (item.server_label, item.name, item.arguments) == ("docs", "edit_page", ARGUMENTS)
        events = list(client.responses.create(model="m", input=PROMPT, stream=True,
                                              extra_headers=on("docs", new_user())))
    deltas = "".join(e.delta for e in events if e.type == "response.mcp_call_arguments.delta")
    assert deltas == ARGUMENTS
    [done] = [e for e in events if e.type == "response.completed"]
    [item] = [o for o in done.response.output if o.type == "mcp_call"]
    assert item.arguments == ARGUMENTS


def test_mcp_definitions_lose_the_tools_the_policy_always_refuses(governed: Any,
                                                                  mock: Any) -> None:
    body = {"model": "m", "input": PROMPT, "tools": [
        {"type": "mcp", "server_label": "wiki", "server_url": "https://wiki.example/mcp",
         "require_approval": "never", "allowed_tools": ["read_page", "edit_page"]},
        {"type": "mcp", "server_label": "docs", "server_url": "https://docs.example/mcp",
         "require_approval": "never", "allowed_tools": ["edit_page"]}]}
    with openai_sdk(governed, "proj_model_tools") as client:
        answer = client.responses.with_raw_response.create(
            **body, extra_headers=headers(new_user(), chunks=["ok"]))  # type: ignore[arg-type]
    assert json.loads(answer.text)["policy"]["tools_removed"] == ["edit_page"]
    sent = mock.requests[-1].json["tools"]
    assert [t["allowed_tools"] for t in sent] == [["read_page"], ["edit_page"]]


def test_flat_chat_definitions_the_policy_always_refuses_never_reach_the_model(
        governed: Any, mock: Any) -> None:
    with openai_sdk(governed, "proj_model_tools") as client:
        answer = client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": PROMPT}],
            tools=[{"type": "function", "name": "delete_user"},  # type: ignore[list-item]
                   {"type": "function", "name": "get_weather"}],
            extra_headers=headers(new_user(), chunks=["ok"]))
    assert json.loads(answer.text)["policy"]["tools_removed"] == ["delete_user"]
    assert mock.requests[-1].json["tools"] == [{"type": "function", "name": "get_weather"}]
