"""An attacker's pass over provider-run MCP tools on the responses API, against the real gateway
under hypercorn and the mock provider, with the official openai SDK. The configuration knows
`wiki` (https://wiki.example/mcp) and `docs` (https://docs.example/mcp); `model_tools.pol`
refuses `edit_page` on `wiki`, `known_mcp_servers.pol` also refuses every other server.

The caller chooses `server_label`: relabelling the wiki, respelling its URL, declaring one label
twice, or having the answer name a label the request never declared must not move a call off
the wiki's rules.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from test_policy_model_tool_rules import PROMPT
from test_policy_streams import events_of, headers, new_user, openai_sdk

ARGUMENTS = '{"page": "Home", "text": "Qzv defaced"}'
WIKI = "https://wiki.example/mcp"


def mcp_tool(label: str, url: str, *names: str) -> dict[str, Any]:
    tool = {"type": "mcp", "server_label": label, "server_url": url, "require_approval": "never"}
    return {**tool, "allowed_tools": list(names)} if names else tool


def answering(label: str, user: str) -> dict[str, str]:
    """The provider answers with an `mcp_call` of `edit_page` under `label`."""
    return headers(user, chunks=["Done."], tool_calls=[
        {"name": "edit_page", "arguments": [ARGUMENTS], "server_label": label}])


def create(governed: Any, project: str, tools: list[Any], scenario: dict[str, str], *,
           stream: bool = False) -> Any:
    with openai_sdk(governed, project) as client:
        answer = client.responses.create(model="m", input=PROMPT, tools=tools, stream=stream,
                                         extra_headers=scenario)
        return list(answer) if stream else answer


@pytest.mark.parametrize("url", [
    WIKI, "https://WIKI.Example/mcp/", "https://wiki.example:443/mcp?as=other#x",
    "https://wiki.example./%6Dcp", "https://wiki.example/x/../mcp//", "https://wiki.example/MCP"])
@pytest.mark.parametrize("label", ["wiki-2", "Docs", ""])
def test_relabelling_the_wiki_keeps_its_rules(governed: Any, mock: Any, label: str,
                                              url: str) -> None:
    with openai_sdk(governed, "proj_model_tools") as client:
        answer = client.responses.with_raw_response.create(
            model="m", input=PROMPT, tools=[mcp_tool(label, url, "read_page", "edit_page")],
            extra_headers=headers(new_user(), chunks=["ok"]))
    assert json.loads(answer.text)["policy"]["tools_removed"] == ["edit_page"]
    assert [t["allowed_tools"] for t in mock.requests[-1].json["tools"]] == [["read_page"]]


@pytest.mark.parametrize("stream", [False, True])
def test_a_relabelled_wiki_call_in_the_answer_is_refused(governed: Any, mock: Any,
                                                         stream: bool) -> None:
    user = new_user()
    with pytest.raises(openai.APIError) as refused:
        create(governed, "proj_model_tools", [mcp_tool("wiki-2", WIKI)],
               answering("wiki-2", user), stream=stream)
    assert refused.value.code == "policy_refused"
    assert "Qzv" not in repr(refused.value.body)
    [event] = events_of(governed, user)
    assert (event["outcome"], event["reason_code"]) == ("refused", "WIKI_WRITE")


def test_another_server_under_the_wikis_label_is_not_the_wiki(governed: Any, mock: Any) -> None:
    answer = create(governed, "proj_model_tools",
                    [mcp_tool("wiki", "https://docs.example/mcp", "edit_page")],
                    answering("wiki", new_user()))
    assert [o.name for o in answer.output if o.type == "mcp_call"] == ["edit_page"]
    assert mock.requests[-1].json["tools"][0]["allowed_tools"] == ["edit_page"]


@pytest.mark.parametrize("tools", [
    [mcp_tool("w", "https://wiki.example\\@docs.example/mcp")],
    [mcp_tool("w", "https://user:pw@wiki.example/mcp")],
    [mcp_tool("w", "https://%77iki.example/mcp")],
    [mcp_tool("w", "https://\uff57iki.example/mcp")],
    [mcp_tool("w", "https://wiki.exa\tmple/mcp")],
    [mcp_tool("w", "https://0x7f.1/mcp")],
    [mcp_tool("w", "javascript:alert(1)")],
    [{**mcp_tool("w", WIKI), "connector_id": "connector_dropbox"}],
    [{"type": "mcp", "server_label": "w"}],
    [mcp_tool("x", WIKI), mcp_tool("x", "https://docs.example/mcp")],
], ids=["backslash", "credentials", "escaped-host", "fullwidth-host", "tab", "hex-ipv4",
        "not-http", "url-and-connector", "no-server", "one-label-two-servers"])
def test_a_server_named_ambiguously_is_an_invalid_request(governed: Any, mock: Any,
                                                          tools: list[Any]) -> None:
    sent = len(mock.requests)
    with pytest.raises(openai.BadRequestError) as invalid:
        create(governed, "proj_model_tools", tools, headers(new_user(), chunks=["ok"]))
    assert invalid.value.code == "invalid_request" and invalid.value.param == "tools"
    assert len(mock.requests) == sent  # nothing reached the provider


def test_unknown_servers_can_be_refused_by_policy(governed: Any, mock: Any) -> None:
    tools = [mcp_tool("mine", "https://evil.example/mcp", "read_page"),
             mcp_tool("kb", "https://docs.example/mcp", "read_page"),
             {"type": "mcp", "server_label": "box", "connector_id": "connector_dropbox",
              "allowed_tools": ["search"]}]
    with openai_sdk(governed, "proj_known_mcp") as client:
        answer = client.responses.with_raw_response.create(
            model="m", input=PROMPT, tools=tools,
            extra_headers=headers(new_user(), chunks=["ok"]))
    assert json.loads(answer.text)["policy"]["tools_removed"] == ["read_page", "search"]
    assert [t["server_label"] for t in mock.requests[-1].json["tools"]] == ["kb"]


def test_a_label_the_request_never_declared_is_an_unknown_server(governed: Any,
                                                                  mock: Any) -> None:
    user = new_user()
    with pytest.raises(openai.PermissionDeniedError) as refused:
        create(governed, "proj_known_mcp", [mcp_tool("docs", "https://docs.example/mcp")],
               answering("wiki", user))
    assert refused.value.code == "policy_refused"
    [event] = events_of(governed, user)
    assert event["reason_code"] == "UNKNOWN_MCP_SERVER"
