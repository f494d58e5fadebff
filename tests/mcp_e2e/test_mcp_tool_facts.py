"""Tool facts on `/policy/mcp/NAME`, with the official MCP SDK client against a real FastMCP
server and the example policy (policies/mcp_tools.pol): `tools/list` filtered by the policy,
calls refused by `tool.name` (globs, look-alike spellings), results redacted by `tool_result`,
prompts and resources governed, and shadow mode recording what would have happened."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import ClientSession
from mcp.shared.exceptions import McpError
from mcp_support import McpGateway, jsonrpc
from pydantic import AnyUrl

from gateway.db import open_database
from gateway.identity.projects import ProjectStore

pytestmark = pytest.mark.slow
GOVERNED = "/policy/mcp/tools"
SHADOWED = {"x-policy-target": "agent-sandbox"}


async def _tool_names(session: ClientSession) -> list[str]:
    return [tool.name for tool in (await session.list_tools()).tools]


@pytest.mark.parametrize("server", ["tools", "tools_json"])
def test_tools_list_hides_what_the_policy_always_refuses(mcp_gateway: McpGateway,
                                                         server: str) -> None:
    names = mcp_gateway.session(f"/policy/mcp/{server}", _tool_names)
    assert "wipe_disk" not in names  # the policy's `tools never_run = ["wipe_*", ...]`
    assert "delete_records" not in names  # the configuration's denied_tools
    # Refused only for some arguments, or held for review: still listed.
    assert {"echo", "run_shell", "lookup_contact"} <= set(names)
    assert [e for e in mcp_gateway.events() if e.get("mcp")] == []  # listing is no call


def test_a_shadowed_target_lists_what_it_would_refuse(mcp_gateway: McpGateway) -> None:
    names = mcp_gateway.session(GOVERNED, _tool_names, headers=SHADOWED)
    assert "wipe_disk" in names  # refused in shadow only: not hidden
    assert "delete_records" not in names  # the configuration is always enforced
    assert "wipe_disk" in mcp_gateway.session("/mcp/tools", _tool_names)


@pytest.mark.parametrize("name", ["wipe_disk", "WIPE_Disk", "\uff57ipe_disk", "wipe_\u0501isk"])
def test_a_tool_refused_by_name_never_runs(mcp_gateway: McpGateway, name: str) -> None:
    async def work(session: ClientSession) -> McpError:
        with pytest.raises(McpError) as raised:
            await session.call_tool(name, {"device": "/dev/sda"})
        return raised.value

    error = mcp_gateway.session(GOVERNED, work).error
    assert error.code == -32001 and error.message == "This tool is not available to agents."
    policy = error.data["policy"]
    assert policy["reason_code"] == "TOOL_NOT_ALLOWED"
    (event,) = mcp_gateway.tool_events()
    assert event["reason_code"] == "TOOL_NOT_ALLOWED"
    assert event["tool"] == {"name": name} and event["outcome"] == "refused"
    assert event["mcp"] == {"server": "tools", "method": "tools/call"}
    assert "/dev/sda" not in repr(event)


def test_glob_syntax_in_a_tool_name_is_no_wildcard(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> Any:
        return await session.call_tool("[w]ipe_disk", {"device": "x"})

    # Not a name of the list: the policy lets it through, and the server knows no such tool.
    result = mcp_gateway.session(GOVERNED, work)
    assert result.isError and result.meta["policy"]["decision"] == "allow"
    (event,) = mcp_gateway.tool_events()
    assert event["outcome"] == "completed" and event["tool"] == {"name": "[w]ipe_disk"}


def test_a_very_long_tool_name_is_decided_and_answered(mcp_gateway: McpGateway) -> None:
    long_name = "wipe_" + "x" * 200_000

    async def work(session: ClientSession) -> McpError:
        with pytest.raises(McpError) as raised:
            await session.call_tool(long_name, {})
        return raised.value

    error = mcp_gateway.session(GOVERNED, work).error
    assert error.data["policy"]["reason_code"] == "TOOL_NOT_ALLOWED"
    (event,) = mcp_gateway.tool_events()
    assert event["outcome"] == "refused"


def test_a_shadowed_refusal_runs_the_tool_and_records_it(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> Any:
        return await session.call_tool("wipe_disk", {"device": "scratch"})

    result = mcp_gateway.session(GOVERNED, work, headers=SHADOWED)
    assert not result.isError and result.content[0].text == "wiped scratch"
    policy = result.meta["policy"]
    assert (policy["decision"], policy["effective_decision"]) == ("refuse", "allow")
    (event,) = mcp_gateway.tool_events()
    assert event["reason_code"] == "TOOL_NOT_ALLOWED" and event["enforced"] is False
    assert event["rollout_mode"] == "shadow" and event["outcome"] == "completed"


def test_a_result_is_redacted_by_its_tool_result_rule(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> Any:
        return await session.call_tool("lookup_contact", {"name": "Jane"})

    result = mcp_gateway.session(GOVERNED, work)
    assert "jane.doe@example.com" not in result.content[0].text
    assert "[REDACTED:EMAIL]" in result.content[0].text
    assert "jane.doe" not in repr(result.structuredContent)
    # The text block and the structured content each held the address once.
    assert result.meta["policy"]["redacted_spans"] == {"email": 2}
    (event,) = mcp_gateway.tool_events()
    assert event["redacted_spans"] == {"email": 2}
    assert "jane.doe" not in repr(event)


def test_a_prompt_is_redacted_with_its_event(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> Any:
        return await session.get_prompt("contact_card", {"name": "Jane"})

    prompt = mcp_gateway.session(GOVERNED, work)
    text = prompt.messages[0].content.text
    assert text == "Write a card for Jane; their address is [REDACTED:EMAIL]."
    (event,) = mcp_gateway.tool_events()
    assert event["mcp"] == {"server": "tools", "method": "prompts/get"}
    assert event["prompt"] == {"name": "contact_card"} and "tool" not in event
    assert event["policy_target"] == "mcp_prompt" and event["redacted_spans"] == {"email": 1}
    assert "jane.doe" not in repr(event)


def test_a_resource_is_redacted_or_refused(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> tuple[Any, McpError]:
        note = await session.read_resource(AnyUrl("notes://7"))
        with pytest.raises(McpError) as raised:
            await session.read_resource(AnyUrl("secrets://deploy-keys"))
        return note, raised.value

    note, refused = mcp_gateway.session(GOVERNED, work)
    assert note.contents[0].text == "Note 7: ask [REDACTED:EMAIL]."
    assert refused.error.code == -32001
    assert refused.error.data["policy"]["reason_code"] == "SECRET_RESOURCE"
    events = mcp_gateway.tool_events(2)
    assert [(e["mcp"]["method"], e["outcome"], e["resource"]) for e in events] == [
        ("resources/read", "completed", {"scheme": "notes"}),
        ("resources/read", "refused", {"scheme": "secrets"})]
    assert "deploy-keys" not in repr(events)


def test_prompts_and_resources_do_not_count_as_tool_calls(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> Any:
        for _ in range(3):  # the project allows two tool calls a day
            await session.read_resource(AnyUrl("notes://1"))
        return await session.call_tool("echo", {"text": "still allowed"})

    result = mcp_gateway.session(GOVERNED, work, project="proj_quota")
    assert result.content[0].text == "still allowed"


@pytest.mark.parametrize(("method", "params"), [
    ("prompts/get", {"arguments": {"name": "x"}}), ("resources/read", {"uri": ""})])
def test_prompts_and_resources_without_a_name_are_invalid_params(
        mcp_gateway: McpGateway, method: str, params: dict[str, Any]) -> None:
    response = jsonrpc(mcp_gateway, GOVERNED,
                       {"jsonrpc": "2.0", "id": 9, "method": method, "params": params})
    assert response.status_code == 200
    assert response.json()["error"]["code"] == -32602 and response.json()["id"] == 9
    assert [e for e in mcp_gateway.events() if e.get("mcp")] == []


@pytest.fixture
def least_privilege(mcp_gateway: McpGateway) -> McpGateway:
    """A project under policies/mcp_least_privilege.pol (default refuse, listed tools only)."""
    running = mcp_gateway.gateway
    projects = ProjectStore(open_database(running.db_path))
    projects.create(project_id="proj_least", account_id=running.account.id, name="least",
                    policy_id="mcp_least_privilege")
    projects.db.conn.close()
    mcp_gateway.keys["proj_least"] = running.store.create_key(
        running.account.id, project_id="proj_least")[1]
    return mcp_gateway


def test_a_default_refusal_lists_only_what_the_policy_allows(least_privilege: McpGateway
                                                             ) -> None:
    async def work(session: ClientSession) -> tuple[list[str], McpError, Any]:
        names = await _tool_names(session)
        with pytest.raises(McpError) as raised:
            await session.call_tool("run_shell", {"command": "ls"})
        return names, raised.value, await session.call_tool("lookup_contact", {"name": "Jo"})

    names, refused, allowed = least_privilege.session(GOVERNED, work, project="proj_least")
    assert sorted(names) == ["echo", "lookup_contact"]
    assert refused.error.message == "This tool is not available to agents."
    assert "[REDACTED:EMAIL]" in allowed.content[0].text
    shadowed = least_privilege.session(GOVERNED, _tool_names, project="proj_least",
                                       headers=SHADOWED)
    assert "run_shell" in shadowed and "delete_records" not in shadowed
