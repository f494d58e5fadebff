"""`/mcp/NAME`: the upstream MCP server through the gateway, as it is, with the official SDK
client: sessions, notifications while a call runs, the server's own stream, session end."""

from __future__ import annotations

import httpx2
import pytest
from mcp import ClientSession, types
from mcp_support import McpGateway, jsonrpc

pytestmark = pytest.mark.slow
TRANSPARENT = "/mcp/tools"


def test_sdk_session_lists_and_calls_with_notifications(mcp_gateway: McpGateway) -> None:
    progress: list[tuple[float, float | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total))

    async def work(session: ClientSession) -> types.CallToolResult:
        return await session.call_tool("with_progress", {"steps": 3},
                                       progress_callback=on_progress)

    result = mcp_gateway.session(TRANSPARENT, work)
    assert result.content[0].text == "done in 3 steps"
    assert progress == [(1.0, 3.0), (2.0, 3.0), (3.0, 3.0)]
    # The transparent route adds nothing to the server's answer, and records no tool event.
    assert result.meta is None
    assert mcp_gateway.tool_events(count=0) == []


def test_governed_route_relays_notifications_too(mcp_gateway: McpGateway) -> None:
    progress: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    async def work(session: ClientSession) -> types.CallToolResult:
        return await session.call_tool("with_progress", {"steps": 2},
                                       progress_callback=on_progress)

    result = mcp_gateway.session("/policy/mcp/tools", work)
    assert result.content[0].text == "done in 2 steps" and progress == [1.0, 2.0]
    assert result.meta["policy"]["decision"] == "allow"


def test_session_id_relayed_server_stream_opened_and_session_ended(
        mcp_gateway: McpGateway) -> None:
    headers = {"mcp-protocol-version": "2025-11-25"}
    init = jsonrpc(mcp_gateway, TRANSPARENT, {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "raw-test", "version": "0"}}}, headers=headers)
    assert init.status_code == 200
    session_id = init.headers["mcp-session-id"]
    auth = {"authorization": f"Bearer {mcp_gateway.keys['proj_tools']}",
            "mcp-session-id": session_id, **headers}
    # The server's own stream: its head arrives at once, although no event has been sent yet.
    with httpx2.stream("GET", mcp_gateway.url + TRANSPARENT, timeout=5,
                      headers={**auth, "accept": "text/event-stream"}) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
    ended = httpx2.delete(mcp_gateway.url + TRANSPARENT, headers=auth, timeout=5)
    assert ended.status_code == 200
    # The session is gone upstream: the server answers 404 for it.
    after = jsonrpc(mcp_gateway, TRANSPARENT, {"jsonrpc": "2.0", "id": 2, "method": "ping"},
                    headers={"mcp-session-id": session_id, **headers})
    assert after.status_code == 404
