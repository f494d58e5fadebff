"""`prompts/list`, `resources/list` and `resources/templates/list` on `/policy/mcp/NAME`,
filtered like `tools/list`, with the official MCP SDK client against a real FastMCP server: an
entry the policy always refuses for the caller is not shown, and reading it anyway is refused."""

from __future__ import annotations

import pytest
from mcp import ClientSession
from mcp.shared.exceptions import McpError
from mcp_support import McpGateway
from pydantic import AnyUrl

pytestmark = pytest.mark.slow
GOVERNED = "/policy/mcp/tools"


async def _listed(session: ClientSession) -> dict[str, list[str]]:
    return {
        "prompts": [p.name for p in (await session.list_prompts()).prompts],
        "resources": [str(r.uri) for r in (await session.list_resources()).resources],
        "templates": [t.uriTemplate for t in
                      (await session.list_resource_templates()).resourceTemplates],
    }


def test_the_example_policy_hides_no_prompt_or_resource(mcp_gateway: McpGateway) -> None:
    # Its resource rule reads the URI (a text), so only a read can tell: everything is listed.
    listed = mcp_gateway.session(GOVERNED, _listed)
    assert listed == mcp_gateway.session("/mcp/tools", _listed)
    assert listed["prompts"] == ["contact_card"]
    assert listed["resources"] == ["secrets://deploy-keys"]
    assert listed["templates"] == ["notes://{note_id}"]


def test_prompts_the_policy_always_refuses_are_not_listed(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> tuple[dict[str, list[str]], McpError]:
        listed = await _listed(session)
        with pytest.raises(McpError) as raised:  # named anyway: refused, as the list said
            await session.get_prompt("contact_card", {"name": "Jane"})
        return listed, raised.value

    listed, error = mcp_gateway.session(GOVERNED, work, project="proj_locked")
    assert listed["prompts"] == []
    assert listed["resources"] == ["secrets://deploy-keys"]
    assert listed["templates"] == ["notes://{note_id}"]
    assert error.error.data["policy"]["reason_code"] == "NO_PROMPTS"
    # The transparent route lists everything.
    assert mcp_gateway.session("/mcp/tools", _listed,
                               project="proj_locked")["prompts"] == ["contact_card"]


def test_resources_hidden_from_one_user_only(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> tuple[dict[str, list[str]], McpError]:
        listed = await _listed(session)
        with pytest.raises(McpError) as raised:
            await session.read_resource(AnyUrl("notes://1"))
        return listed, raised.value

    intern = {"x-policy-user": "intern"}
    listed, error = mcp_gateway.session(GOVERNED, work, project="proj_locked", headers=intern)
    assert listed == {"prompts": [], "resources": [], "templates": []}
    assert error.error.data["policy"]["reason_code"] == "NO_RESOURCES"

    async def listing(session: ClientSession) -> dict[str, list[str]]:
        return await _listed(session)

    other = mcp_gateway.session(GOVERNED, listing, project="proj_locked",
                                headers={"x-policy-user": "ada"})
    assert other["resources"] == ["secrets://deploy-keys"]
    assert other["templates"] == ["notes://{note_id}"]
