"""Answers on `/policy/mcp/NAME` with the official MCP SDK client against a real FastMCP
server: a result holding a Unicode line separator is still governed, personal data in the keys
of a structured result is redacted, and a request of the server's (an elicitation) still
reaches the client in the middle of a governed call."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import ClientSession, types
from mcp.shared.context import RequestContext
from mcp_support import McpGateway

pytestmark = pytest.mark.slow
EMAIL = "jane.doe@example.com"


@pytest.mark.parametrize("server", ["tools", "tools_json"])
@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_a_line_separator_in_a_result_is_governed(mcp_gateway: McpGateway, server: str,
                                                  separator: str) -> None:
    # The SDK's server writes these unescaped (raw UTF-8) inside the JSON string.
    async def work(session: ClientSession) -> Any:
        return await session.call_tool("echo", {"text": f"mail {EMAIL} {separator} end"})

    result = mcp_gateway.session(f"/policy/mcp/{server}", work)
    assert result.content[0].text == f"mail [REDACTED:EMAIL] {separator} end"
    assert result.meta["policy"]["decision"] == "allow"
    (event,) = mcp_gateway.tool_events()
    assert event["outcome"] == "completed"


def test_e_mail_addresses_in_structured_keys_are_redacted(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> Any:
        return await session.call_tool("contacts_by_mail", {})

    result = mcp_gateway.session("/policy/mcp/tools", work)
    assert result.structuredContent == {"[REDACTED:EMAIL]": {"name": "Jane"},
                                        "[REDACTED:EMAIL] (2)": {"name": "John"}}
    assert "example.com" not in result.content[0].text
    assert result.meta["policy"]["redacted_spans"]["email"] >= 2


def test_an_elicitation_reaches_the_client_during_a_governed_call(
        mcp_gateway: McpGateway) -> None:
    asked: list[str] = []

    async def on_elicit(context: RequestContext[ClientSession, Any],
                        params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"confirmed": True})

    async def work(session: ClientSession) -> Any:
        return await session.call_tool("confirm_then_lookup", {"name": "Jane"})

    result = mcp_gateway.session("/policy/mcp/tools", work, elicitation_callback=on_elicit)
    assert asked == ["Look up Jane?"]
    assert result.content[0].text == "Jane: [REDACTED:EMAIL]"
    (event,) = mcp_gateway.tool_events()
    assert event["outcome"] == "completed"
